#!/usr/bin/env bash
# Runs the pair on this machine without Docker: a producer with its demo source and three
# consumers (push, poll, long-poll) side by side, logs interleaved. Ctrl-C stops them all.
# The dashboard is at http://127.0.0.1:8080/; metrics at :8080/metrics and :9464-9466/metrics.
# The producer keeps its log on disk in $DATA_DIR (./data), so a second run continues the same
# log; `rm -rf data` starts a fresh one. DEMO_RATE (20) sets the demo source's events per second.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p pushpull-producer -p pushpull-consumer --bins
bin=target/release
pids=()
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$bin/producer" --listen 127.0.0.1:50051 --http-listen 127.0.0.1:8080 --demo-rate "${DEMO_RATE:-20}" \
  --store file --data-dir "${DATA_DIR:-data}" \
  --consumers http://127.0.0.1:50061,http://127.0.0.1:50062,http://127.0.0.1:50063 &
pids+=($!)
sleep 0.5
"$bin/consumer" --listen 127.0.0.1:50061 --metrics-listen 127.0.0.1:9464 --mode push --producer http://127.0.0.1:50051 &
pids+=($!)
"$bin/consumer" --listen 127.0.0.1:50062 --metrics-listen 127.0.0.1:9465 --mode poll --poll-interval 1s --producer http://127.0.0.1:50051 &
pids+=($!)
"$bin/consumer" --listen 127.0.0.1:50063 --metrics-listen 127.0.0.1:9466 --mode long-poll --max-wait 30s --producer http://127.0.0.1:50051 &
pids+=($!)
wait
