#!/usr/bin/env bash
# /metrics on both services, scraped over HTTP and parsed with the Python Prometheus client's
# parsers (Prometheus text and strict OpenMetrics), after real traffic: a producer, a consumer
# reading it, events published over HTTP, an SSE reader and a rejected request. Then a real
# Prometheus server (Debian's package) scrapes both with deploy/prometheus/prometheus.yml's jobs
# pointed at them, and its query API must return the same numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c 'import prometheus_client' 2>/dev/null || { echo "python3 prometheus_client missing (.ci/install.d/60-metrics.sh)"; exit 77; }
command -v curl >/dev/null || { echo "curl missing"; exit 77; }
command -v prometheus >/dev/null || { echo "prometheus missing (.ci/install.d/60-metrics.sh)"; exit 77; }
promtool check config deploy/prometheus/prometheus.yml

# The same build as `cargo test --workspace` (so the same feature set: nothing to rebuild after
# it); the integration tests need the binaries, so this builds them.
cargo test --workspace --locked --no-run --quiet
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no answer from $1"; return 1; }

grpc=$(free_port); http=$(free_port); cgrpc=$(free_port); cmetrics=$(free_port)
"$bin/producer" --store memory --listen 127.0.0.1:$grpc --http-listen 127.0.0.1:$http 2>"$work/producer.log" & pids+=($!)
wait_http "http://127.0.0.1:$http/metrics"
"$bin/consumer" --producer http://127.0.0.1:$grpc --listen 127.0.0.1:$cgrpc --mode push --from earliest \
  --metrics-listen 127.0.0.1:$cmetrics 2>"$work/consumer.log" & pids+=($!)
wait_http "http://127.0.0.1:$cmetrics/metrics"

# Traffic: an SSE reader, 30 events over HTTP, one long poll, one bad request.
curl -sN "http://127.0.0.1:$http/events?after=0" >"$work/sse.txt" & sse=$!
for i in 1 2 3; do
  curl -fsS -X POST "http://127.0.0.1:$http/publish" -H 'content-type: application/json' \
    -d "{\"events\":[$(for j in $(seq 10); do printf '{"topic":"suite.metrics","payload":"%s-%s"},' $i $j; done | sed 's/,$//')]}" >/dev/null
done
curl -fsS "http://127.0.0.1:$http/poll?after=0&wait=1s" >/dev/null
test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/poll?after=999")" = 400
for _ in $(seq 50); do grep -q '^id: 30$' "$work/sse.txt" && break; sleep 0.1; done
grep -q '^id: 30$' "$work/sse.txt" || { echo "SSE reader did not get event 30"; exit 1; }
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$cmetrics/metrics" | grep -q '^pushpull_consumer_events_received_total{mode="push"} 30$' && break
  sleep 0.1
done

curl -fsS "http://127.0.0.1:$http/metrics" >"$work/producer.prom"
curl -fsS "http://127.0.0.1:$cmetrics/metrics" >"$work/consumer.prom"
kill "$sse" 2>/dev/null || true

python3 - "$work/producer.prom" "$work/consumer.prom" "http://127.0.0.1:$grpc" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

def load(path):
    text = open(path).read()
    # The strict OpenMetrics parser (what the Content-Type announces, and what Prometheus
    # negotiates) is the reference; the classic text parser must accept it too (it reads
    # counters' `_total` samples as families of their own).
    om = {f.name: f for f in parse_openmetrics(text)}
    prom = {f.name: f for f in parse_prometheus(text)}
    assert om and set(om) <= set(prom), (sorted(om), sorted(prom))
    return om

def value(families, name, sample, **labels):
    family = families[name]
    for s in family.samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {sample}{labels} in {family}")

p = load(sys.argv[1])
c = load(sys.argv[2])
producer_url = sys.argv[3]
checks = [
    (value(p, "pushpull_producer_events_appended", "pushpull_producer_events_appended_total"), 30),
    (value(p, "pushpull_producer_head_sequence", "pushpull_producer_head_sequence"), 30),
    (value(p, "pushpull_producer_oldest_sequence", "pushpull_producer_oldest_sequence"), 1),
    (value(p, "pushpull_producer_retained_events", "pushpull_producer_retained_events"), 30),
    (value(p, "pushpull_producer_subscribers", "pushpull_producer_subscribers", transport="grpc_stream"), 1),
    (value(p, "pushpull_producer_events_delivered", "pushpull_producer_events_delivered_total", transport="sse"), 30),
    (value(p, "pushpull_producer_events_delivered", "pushpull_producer_events_delivered_total", transport="grpc_stream"), 30),
    (value(p, "pushpull_producer_events_delivered", "pushpull_producer_events_delivered_total", transport="http_poll"), 30),
    (value(p, "pushpull_producer_rejected_requests", "pushpull_producer_rejected_requests_total", protocol="http", reason="CURSOR_AHEAD"), 1),
    (value(p, "pushpull_producer_request_duration_seconds", "pushpull_producer_request_duration_seconds_count", protocol="http", method="publish"), 3),
    (value(c, "pushpull_consumer_events_received", "pushpull_consumer_events_received_total", mode="push"), 30),
    (value(c, "pushpull_consumer_events_missed", "pushpull_consumer_events_missed_total", mode="push"), 0),
    (value(c, "pushpull_consumer_duplicates_dropped", "pushpull_consumer_duplicates_dropped_total", mode="push"), 0),
    (value(c, "pushpull_consumer_connected", "pushpull_consumer_connected", mode="push"), 1),
    (value(c, "pushpull_consumer_failovers", "pushpull_consumer_failovers_total", mode="push"), 0),
    (value(c, "pushpull_consumer_current_producer", "pushpull_consumer_current_producer", mode="push", producer=producer_url), 1),
    (value(c, "pushpull_consumer_latency_seconds", "pushpull_consumer_latency_seconds_count", mode="push"), 30),
    (value(c, "pushpull_consumer_latency_seconds", "pushpull_consumer_latency_seconds_bucket", mode="push", le="+Inf"), 30),
]
bad = [(got, want) for got, want in checks if got != want]
assert not bad, bad
for name in ["pushpull_consumer_reconnects", "pushpull_consumer_rpcs_sent", "pushpull_producer_pollers",
             "pushpull_producer_subscribers_lagged", "pushpull_producer_retained_bytes"]:
    assert name in p or name in c, name
assert p["pushpull_producer_request_duration_seconds"].type == "histogram"
assert c["pushpull_consumer_latency_seconds"].type == "histogram"
print(f"metrics parsed: producer {len(p)} families, consumer {len(c)} families; {len(checks)} values checked")
PY

# A real Prometheus scrapes both services, with the compose config's jobs pointed at this run.
prom=$(free_port)
sed -e "s/producer:8080/127.0.0.1:$http/" -e "s/\[\"push:9464\", \"poll:9464\", \"long-poll:9464\", \"webhook:9464\"\]/[\"127.0.0.1:$cmetrics\"]/" \
  -e "s/scrape_interval: 5s/scrape_interval: 1s/" deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
grep -q "127.0.0.1:$cmetrics" "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:$prom >"$work/prometheus.log" 2>&1 & pids+=($!)
query() { curl -fsS "http://127.0.0.1:$prom/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null || true; }
ok=""
for _ in $(seq 150); do
  if [ "$(query 'sum(up{job=~"producer|consumer"})')" = 2 ] &&
     [ "$(query 'pushpull_producer_head_sequence')" = 30 ] &&
     [ "$(query 'pushpull_consumer_events_received_total{mode="push"}')" = 30 ] &&
     [ "$(query 'pushpull_consumer_latency_seconds_count{mode="push"}')" = 30 ]; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { echo "Prometheus did not scrape the expected values"; tail -20 "$work/prometheus.log"; exit 1; }
echo "prometheus $(prometheus --version 2>&1 | head -1 | cut -d' ' -f3) scraped both services: up=2, head_sequence=30, consumer events_received_total=30"
