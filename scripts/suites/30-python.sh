#!/usr/bin/env bash
# The Python client (clients/python): regenerate it from proto/ with grpcio-tools, then run its
# examples (publish, subscribe, poll, webhook_receiver) against a live producer and check exactly
# what they print (scripts/suites/client_examples.py). The webhook receiver verifies every
# delivery with the `standardwebhooks` package, an implementation of the signature independent
# of the producer's. Tools: .ci/install.d/30-python-clients.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS

if ! python3 -c 'import grpc, grpc_tools, grpc_status, google.protobuf, google.rpc, standardwebhooks' 2>/dev/null; then
  echo "30-python: grpcio / grpcio-tools / grpcio-status / protobuf / standardwebhooks missing (pip install -r clients/python/requirements.txt)"
  exit 77
fi

clients/python/generate.sh
cargo build --locked -p pushpull-producer --bin producer --quiet

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# A small retention: the scenario publishes past it to expire a cursor. Webhooks go to loopback
# (the default --webhook-allow), are retried within 200 ms and come in batches of at most 4.
retention=20
target/debug/producer --store memory --listen "127.0.0.1:$port" --http-listen off --retention-events $retention \
  --webhook-retry-min 50ms --webhook-retry-max 200ms --webhook-max-batch-events 4 \
  2>"$tmp/producer.log" &
pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

rc=0
timeout 150 python3 scripts/suites/client_examples.py --producer "127.0.0.1:$port" --tmp "$tmp" \
  --retention $retention \
  --cwd clients/python \
  --publish "python3 publish.py" --subscribe "python3 subscribe.py" --poll "python3 poll.py" \
  --webhook "python3 webhook_receiver.py" || rc=$?
[ $rc -eq 0 ] || { echo "--- producer log"; tail -n 20 "$tmp/producer.log"; }
echo "30-python: wall time $((SECONDS - started))s"
exit $rc
