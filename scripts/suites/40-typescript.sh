#!/usr/bin/env bash
# The TypeScript client (clients/typescript): npm ci, generate it from proto/ with buf +
# protoc-gen-es, type-check it, then run its examples (publish, subscribe, poll) with tsx against a
# live producer and check exactly what they print (scripts/suites/client_examples.py).
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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# A small retention: the scenario publishes past it to expire a cursor.
retention=20
target/debug/producer --store memory --listen "127.0.0.1:$port" --http-listen off --retention-events $retention \
  2>"$tmp/producer.log" &
pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# tsx straight from node_modules (what `npx tsx` runs), without npm's own start-up.
tsx=node_modules/.bin/tsx
rc=0
timeout 180 python3 scripts/suites/client_examples.py --producer "127.0.0.1:$port" --tmp "$tmp" \
  --retention $retention \
  --cwd clients/typescript \
  --publish "$tsx src/publish.ts" --subscribe "$tsx src/subscribe.ts" --poll "$tsx src/poll.ts" \
  || rc=$?
[ $rc -eq 0 ] || { echo "--- producer log"; tail -n 20 "$tmp/producer.log"; }
echo "40-typescript: wall time $((SECONDS - started))s"
exit $rc
