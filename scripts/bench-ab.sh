#!/usr/bin/env bash
# A/B of the benchmark: a base commit (A) against this work tree (B), on the same machine, back to
# back, alternating A B A B … so that a change in the machine's load falls on both.
#
#   scripts/bench-ab.sh 4ae9325                       # --only throughput, 2 rounds
#   ROUNDS=3 ONLY=throughput,latency scripts/bench-ab.sh main
#
# The base is built in a scratch worktree outside the repository with a target directory of its
# own (kept for the next A/B of the same commit: AB_DIR, default ${TMPDIR:-/tmp}/pushpull-ab-REV;
# `git worktree remove --force DIR` when done). Builds are release builds, one at a time, with
# --offline: no network is needed once the dependencies are in cargo's cache. Each run writes its
# own results directory under the scratch directory; nothing in the repository changes.
#
# Prints every run's Throughput table, then (with python3) each row's mean events/s for A and B
# and the ratio B/A.
set -euo pipefail

base=${1:?usage: scripts/bench-ab.sh BASE_COMMIT   (env: ONLY=throughput ROUNDS=2 AB_DIR=...)}
only=${ONLY:-throughput}
rounds=${ROUNDS:-2}
root=$(git rev-parse --show-toplevel)
rev=$(git -C "$root" rev-parse --short "$base^{commit}")
scratch=${AB_DIR:-${TMPDIR:-/tmp}/pushpull-ab-$rev}
tree=$scratch/tree

mkdir -p "$scratch"
if [ ! -e "$tree/.git" ]; then
  git -C "$root" worktree add --detach "$tree" "$rev" >/dev/null
fi
echo "A: $rev (in $tree)"
echo "B: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD || echo ' + uncommitted changes') (in $root)"

(cd "$tree" && CARGO_TARGET_DIR="$tree/target" cargo build --release --offline --locked -q -p pushpull-bench)
(cd "$root" && cargo build --release --offline --locked -q -p pushpull-bench)
bin_a=$tree/target/release/pushpull-bench
bin_b=${CARGO_TARGET_DIR:-$root/target}/release/pushpull-bench

runs=()
for round in $(seq 1 "$rounds"); do
  for side in A B; do
    out=$scratch/results-$round-$side
    if [ "$side" = A ]; then dir=$tree bin=$bin_a; else dir=$root bin=$bin_b; fi
    echo
    echo "== $side, round $round: load $(cut -d' ' -f1-3 /proc/loadavg)"
    # Each build runs in its own tree, so its report names its own commit.
    (cd "$dir" && "$bin" --only "$only" --out "$out" 2>"$out.log") || echo "(run failed: $out.log)"
    sed -n '/^## Throughput/,/^## /{/^| /p}' "$out/results.md" 2>/dev/null || true
    runs+=("$side:$out/results.json")
  done
done

if command -v python3 >/dev/null; then
  echo
  python3 - "${runs[@]}" <<'EOF'
import json, sys
from collections import defaultdict
rates = defaultdict(lambda: {"A": [], "B": []})
order = []
for arg in sys.argv[1:]:
    side, path = arg.split(":", 1)
    try:
        results = json.load(open(path))
    except OSError:
        continue
    for t in results.get("throughput", []):
        if t["name"] not in order:
            order.append(t["name"])
        rates[t["name"]][side].append(t["events_per_second"] / 1e6)
print("| run | A M/s (each) | B M/s (each) | B/A of means |")
print("|---|--:|--:|--:|")
for name in order:
    a, b = rates[name]["A"], rates[name]["B"]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    each = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
    print(f"| {name} | {mean(a):.2f} ({each(a)}) | {mean(b):.2f} ({each(b)}) | {mean(b) / mean(a):.2f} |")
EOF
fi
