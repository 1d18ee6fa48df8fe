#!/usr/bin/env bash
# Runs the pair on this machine without Docker: a producer with its demo source and three
# consumers (push, poll, long-poll) side by side, logs interleaved. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin producer --bin consumer
bin=target/release
pids=()
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$bin/producer" --listen 127.0.0.1:50051 --demo-rate "${DEMO_RATE:-20}" &
pids+=($!)
sleep 0.5
"$bin/consumer" --listen 127.0.0.1:50061 --mode push --producer http://127.0.0.1:50051 &
pids+=($!)
"$bin/consumer" --listen 127.0.0.1:50062 --mode poll --poll-interval 1s --producer http://127.0.0.1:50051 &
pids+=($!)
"$bin/consumer" --listen 127.0.0.1:50063 --mode long-poll --max-wait 30s --producer http://127.0.0.1:50051 &
pids+=($!)
wait
