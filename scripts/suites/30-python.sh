#!/usr/bin/env bash
# The Python client (clients/python): regenerate it from proto/ with grpcio-tools, then run its
# examples (publish, subscribe, poll, webhook_receiver) against a live producer and check exactly
# what they print (scripts/suites/client_examples.py), then again over TLS and mutual TLS with
# bearer tokens, and refused without them. The webhook receiver verifies every
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

# A small retention: the scenario publishes past it to expire a cursor. Webhooks go to loopback
# (the default --webhook-allow), are retried within 200 ms and come in batches of at most 4.
retention=20
port=$(free_port)
start_producer producer "$port" --retention-events $retention \
  --webhook-retry-min 50ms --webhook-retry-max 200ms --webhook-max-batch-events 4

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

rc=0
timeout 150 python3 scripts/suites/client_examples.py --producer "127.0.0.1:$port" --tmp "$tmp" \
  --retention $retention \
  --cwd clients/python \
  --publish "python3 publish.py" --subscribe "python3 subscribe.py" --poll "python3 poll.py" \
  --webhook "python3 webhook_receiver.py" \
  --secure-producer "127.0.0.1:$tls_port" --mtls-producer "127.0.0.1:$mtls_port" \
  --ca "$tmp/certs/ca.pem" --cert "$tmp/certs/client.pem" --key "$tmp/certs/client.key" \
  --publish-token "$publish_token" --read-token "$read_token" || rc=$?
if [ $rc -ne 0 ]; then
  for log in "$tmp"/producer*.log; do echo "--- $(basename "$log")"; tail -n 20 "$log"; done
fi
echo "30-python: wall time $((SECONDS - started))s"
exit $rc
