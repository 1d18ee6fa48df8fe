#!/usr/bin/env bash
# The TypeScript client (clients/typescript): npm ci, generate it from proto/ with buf +
# protoc-gen-es, type-check it, then run its examples (publish, subscribe, poll) with tsx against a
# live producer and check exactly what they print (scripts/suites/client_examples.py), then again
# over TLS and mutual TLS with bearer tokens, and refused without them.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS

for tool in node npm python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then echo "40-typescript: $tool not found"; exit 77; fi
done
echo "node $(node --version), npm $(npm --version 2>/dev/null)"

(
  cd clients/typescript
  npm ci --no-audit --no-fund --loglevel=error
  rm -rf src/gen
  npm run --silent generate
  ls src/gen/pushpull/v1/producer_pb.ts src/gen/pushpull/v1/consumer_pb.ts \
    src/gen/pushpull/v1/errors_pb.ts src/gen/google/rpc/error_details_pb.ts
  npm run --silent typecheck
)
cargo build --locked -p pushpull-producer --bin producer --quiet

bin=${CARGO_TARGET_DIR:-target}/debug
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_producer NAME PORT FLAGS...: a producer in the background, its log in $tmp/NAME.log.
start_producer() {
  local name=$1 port=$2; shift 2
  "$bin/producer" --store memory --listen "127.0.0.1:$port" --http-listen off "$@" 2>"$tmp/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
}

# A small retention: the scenario publishes past it to expire a cursor.
retention=20
port=$(free_port)
start_producer producer "$port" --retention-events $retention

# Two more, for the connection flags: TLS with tokens, and mutual TLS with tokens.
"$bin/producer" dev-certs --out "$tmp/certs" >/dev/null
token() { python3 -c "import secrets; print(secrets.token_hex(16))"; }
publish_token=$(token) read_token=$(token)
export PRODUCER_TOKENS="$publish_token publish,read; $read_token read"
tls_port=$(free_port)
start_producer producer-tls "$tls_port" --tls-cert "$tmp/certs/producer.pem" --tls-key "$tmp/certs/producer.key"
mtls_port=$(free_port)
start_producer producer-mtls "$mtls_port" --tls-cert "$tmp/certs/producer.pem" --tls-key "$tmp/certs/producer.key" \
  --tls-client-ca "$tmp/certs/ca.pem"
unset PRODUCER_TOKENS

# tsx straight from node_modules (what `npx tsx` runs), without npm's own start-up.
tsx=node_modules/.bin/tsx
rc=0
timeout 180 python3 scripts/suites/client_examples.py --producer "127.0.0.1:$port" --tmp "$tmp" \
  --retention $retention \
  --cwd clients/typescript \
  --publish "$tsx src/publish.ts" --subscribe "$tsx src/subscribe.ts" --poll "$tsx src/poll.ts" \
  --secure-producer "127.0.0.1:$tls_port" --mtls-producer "127.0.0.1:$mtls_port" \
  --ca "$tmp/certs/ca.pem" --cert "$tmp/certs/client.pem" --key "$tmp/certs/client.key" \
  --publish-token "$publish_token" --read-token "$read_token" || rc=$?
if [ $rc -ne 0 ]; then
  for log in "$tmp"/producer*.log; do echo "--- $(basename "$log")"; tail -n 20 "$log"; done
fi
echo "40-typescript: wall time $((SECONDS - started))s"
exit $rc
