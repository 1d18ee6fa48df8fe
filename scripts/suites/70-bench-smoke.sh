#!/usr/bin/env bash
# Benchmark smoke test: runs `pushpull-bench --quick` (every scenario but the soak, small and
# short) and checks that each scenario ran and every output is well-formed. It asserts nothing
# about speed. Then a 60 s soak (`--only soak`, about 70 s with its warm-up): a mixed load with
# stalled and garbage clients, which exits non-zero if the producer's RSS, descriptors or tasks
# do not come back within their margins, or a reader missed or repeated an event.
#
# The jetstream scenario starts nats-server (one node and a three-node cluster), and the peers
# scenario one node for NATS core pub/sub; CI installs it (.ci/install.d/40-nats.sh). Without it
# the run fails under CI=true; elsewhere the report says what was not run, and why.
#
# It uses the dev profile on purpose: `cargo test` has already built every dependency for it, so
# only the bench crate itself compiles here (a release build of the workspace would cost minutes).
set -uo pipefail
cd "$(dirname "$0")/../.."

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
passed=0; failed=0
check() {
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"
  else failed=$((failed + 1)); echo "FAIL $name"; fi
}

if ! cargo build -p pushpull-bench --locked --quiet; then
  echo "0 passed, 1 failed"; exit 1
fi
bin=target/debug/pushpull-bench
start=$SECONDS
timeout 180 "$bin" --quick --out "$out" 2>"$out/progress.log"
rc=$?
echo "quick run: exit $rc in $((SECONDS - start)) s"
tail -n 16 "$out/progress.log"

check "quick run exits 0 (every scenario ran)" test "$rc" -eq 0
check "progress was shown, up to the last step" grep -qE '^\[ ?([0-9]+)/\1\]' "$out/progress.log"
for f in results.md results.json latency.svg throughput.svg fanout.svg; do
  check "$f written" test -s "$out/$f"
done
check "outputs are complete and well-formed (pushpull-bench check)" "$bin" check "$out"

soak="$out/soak"
start=$SECONDS
# 60 s of load, a 6 s warm-up, up to 30 s for readers to catch up and 10 s to settle: bounded.
timeout 150 "$bin" --quick --only soak --soak-secs 60 --out "$soak" 2>"$out/soak.log"
rc=$?
echo "soak: exit $rc in $((SECONDS - start)) s"
grep -E '^  \[(pass|MISS|n/a)\] soak:' "$out/soak.log" || tail -n 16 "$out/soak.log"
check "60 s soak exits 0 (RSS, fds and tasks flat; every event once)" test "$rc" -eq 0
check "soak outputs are well-formed (pushpull-bench check)" "$bin" check "$soak"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
