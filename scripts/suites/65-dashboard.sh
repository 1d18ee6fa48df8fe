#!/usr/bin/env bash
# The live dashboard in headless chromium (playwright-core): it loads, shows events within a
# second of publishing over both SSE and WebSocket, shows the consumers' stats, says when the
# producer is gone and follows the restarted producer by itself. Leaves a screenshot in
# target/dashboard/ (path printed). Then, against a producer serving HTTPS with tokens, the
# page asks for a token (a form on 401/403, or #token=… in the address) and sends it everywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODE_PATH=/opt/pushpull-node/node_modules
command -v chromium >/dev/null || { echo "chromium missing (.ci/install.d/65-dashboard.sh)"; exit 77; }
command -v node >/dev/null || { echo "node missing"; exit 77; }
[ -e "$NODE_PATH/playwright-core/package.json" ] || { echo "playwright-core missing (.ci/install.d/65-dashboard.sh)"; exit 77; }

# The same build as `cargo test --workspace` (so the same feature set: nothing to rebuild after
# it); the integration tests need the binaries, so this builds them.
cargo test --workspace --locked --no-run --quiet
target=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
bin=$target/debug
export NO_COLOR=1
work=$(mktemp -d)
mkdir -p "${CARGO_TARGET_DIR:-target}/dashboard"
pids=()
cleanup() {
  [ -n "${keeper:-}" ] && kill "$keeper" 2>/dev/null || true
  [ -e "$work/producer.pid" ] && kill -TERM "$(cat "$work/producer.pid")" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

grpc=$(free_port); http=$(free_port); c1=$(free_port); c2=$(free_port); c3=$(free_port)
consumers="http://127.0.0.1:$c1,http://127.0.0.1:$c2,http://127.0.0.1:$c3"
# The producer runs under a keeper that starts it again when it exits (the test SIGTERMs it). The
# memory store: each start is a new log, which the page must notice and follow.
(
  while true; do
    "$bin/producer" --store memory --listen 127.0.0.1:$grpc --http-listen 127.0.0.1:$http --demo-rate 5 \
      --consumers "$consumers" 2>>"$work/producer.log" &
    echo $! >"$work/producer.pid"
    wait $! || true
    sleep 0.5
  done
) & keeper=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$http/metrics" 2>/dev/null && break; sleep 0.1; done
for spec in "$c1 push" "$c2 poll" "$c3 long-poll"; do
  set -- $spec
  "$bin/consumer" --producer http://127.0.0.1:$grpc --listen 127.0.0.1:$1 --mode "$2" \
    --poll-interval 500ms --from earliest --summary-interval 0s 2>>"$work/consumers.log" & pids+=($!)
done

PRODUCER_HTTP=127.0.0.1:$http PRODUCER_PID_FILE=$work/producer.pid \
  SCREENSHOT=$target/dashboard/dashboard.png NODE_PATH=$NODE_PATH \
  timeout 120 node scripts/suites/dashboard.cjs || { echo "--- producer log"; tail -20 "$work/producer.log"; exit 1; }

# Again against a producer serving HTTPS and checking tokens: the page asks for a token, takes
# one from the form or from #token=…, and sends it with every request and stream.
tls_grpc=$(free_port); tls_http=$(free_port)
"$bin/producer" dev-certs --out "$work/certs" >/dev/null
read_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
publish_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
PRODUCER_TOKENS="$read_token read; $publish_token publish" "$bin/producer" --store memory \
  --listen 127.0.0.1:$tls_grpc --http-listen 127.0.0.1:$tls_http \
  --tls-cert "$work/certs/producer.pem" --tls-key "$work/certs/producer.key" \
  2>>"$work/producer-tls.log" & pids+=($!)
for _ in $(seq 100); do
  curl -fsS --cacert "$work/certs/ca.pem" -o /dev/null "https://127.0.0.1:$tls_http/" 2>/dev/null && break
  sleep 0.1
done
DASHBOARD_TOKENS=1 PRODUCER_BASE=https://127.0.0.1:$tls_http READ_TOKEN=$read_token \
  PUBLISH_TOKEN=$publish_token NODE_EXTRA_CA_CERTS=$work/certs/ca.pem NODE_PATH=$NODE_PATH \
  timeout 60 node scripts/suites/dashboard.cjs || { echo "--- producer log"; tail -20 "$work/producer-tls.log"; exit 1; }
