#!/usr/bin/env bash
# docker compose, the `cluster` profile, end to end, with the repository's own
# docker-compose.yml, Dockerfile and deploy/nats/Dockerfile:
#   1. the profile's config is valid;
#   2. the three NATS nodes become healthy and form one JetStream cluster: each node routes to
#      the other two, all name the same meta leader of a meta group of 3, accept 8 MB messages
#      and run as their image's unprivileged user; a JetStream round trip through the cluster
#      (an R3 stream, a 2 MiB message, its ack, the stream's leader and two replicas:
#      scripts/suites/nats_smoke.py) works from each node;
#   3. both producers (the JetStream store, one stream on all three nodes) and the push, poll
#      and long-poll consumers become healthy; the two producers serve the same log (the same
#      log_id on their HTTP side); the consumers get every event of it (producer-b's demo
#      source) exactly once: 0 missed, 0 duplicated, events_received == last_sequence;
#   4. `stop producer-a` (the consumers' first choice): the consumers keep receiving, through
#      producer-b, in the same log, still 0 missed and 0 duplicated; producer-a starts again and
#      serves the same log;
#   5. `down -v` leaves no container and no volume behind (also on failure: trap).
# Run once per Compose available: `docker compose` (v2) and `docker-compose` (1.29), as
# scripts/suites/50-compose.sh; under CI both must be there.
#
# Steps 3 and 4 need the producer's JetStream store (`--store jetstream`, `--nats-urls`). A
# producer binary without it (its --help has no --nats-urls) gets steps 1, 2 and 5 only, and the
# suite says so in a NOTE line and in its last line.
#
# Offline as 50-compose.sh: the runtime base from debootstrap, the binaries built on the host,
# the host's own nats-server (2.15.1, .ci/install.d/40-nats.sh) staged by
# scripts/build-prebuilt.sh, and both images' `prebuilt` targets. Only environment variables are
# injected: the images, free host ports, a project name, PRODUCER_DEMO_RATE=20 and
# CONSUMER_FROM=earliest.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS

BASE_IMAGE=${PUSHPULL_CI_BASE_IMAGE:-pushpull-ci/bookworm-minbase:latest}
IMAGE=pushpull-ci/pushpull:cluster-$$
NATS_IMAGE=pushpull-ci/nats:cluster-$$
STATS_BIN=target/release/consumer
NATS_NODES=(nats-1 nats-2 nats-3)
PRODUCERS=(producer-a producer-b)
CONSUMERS=(cluster-push cluster-poll cluster-long-poll)

skip() { echo "55-compose-cluster: $*; skipping (exit 77)"; exit 77; }
command -v docker >/dev/null 2>&1 || skip "no docker CLI"
scripts/start-dockerd.sh || skip "no Docker engine"
composes=()
if docker compose version >/dev/null 2>&1; then composes+=("docker compose"); fi
if command -v docker-compose >/dev/null 2>&1; then composes+=("docker-compose"); fi
[ ${#composes[@]} -gt 0 ] || skip "neither docker compose (v2) nor docker-compose (1.29) found"
if [ "${CI:-}" = "true" ] && [ ${#composes[@]} -lt 2 ]; then
  skip "CI needs both Compose v2 and 1.29; found only: ${composes[*]}"
fi
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] ||
  skip "no nats-server on this host for the NATS image (.ci/install.d/40-nats.sh)"
command -v python3 >/dev/null 2>&1 || skip "no python3 (for the free ports and the JetStream round trip)"

passed=0; failed=0
check() { # check DESCRIPTION COMMAND...: one counted check; fails as the command did
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "  ok   $what"
  else failed=$((failed + 1)); echo "  FAIL $what"; return 1; fi
}
phase() { printf '\n--- %s (%ss)\n' "$*" $((SECONDS - started)); }
step() { printf '  -- %s (%ss)\n' "$*" $((SECONDS - started)); }

# ---------------------------------------------------------------- the images
phase "base image $BASE_IMAGE"
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || skip "no debootstrap to make $BASE_IMAGE"
  scripts/make-bookworm-base.sh "$BASE_IMAGE" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi

phase "host build (scripts/build-prebuilt.sh: the binaries, and the host's nats-server staged)"
timeout 900 scripts/build-prebuilt.sh
# The producer's JetStream store is what steps 3 and 4 are about.
if target/release/producer --help 2>/dev/null | grep -q -- '--nats-urls'; then
  with_store=true
else
  with_store=false
  echo "NOTE: this producer has no JetStream store (no --nats-urls in its --help): only the NATS"
  echo "      cluster is checked, not the producers and consumers on it"
fi

# Host ports: free ones, so a running `docker compose up` or another test is no obstacle.
read -r -a FREE < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(13)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
declare -A NATS_PORT=([nats-1]=${FREE[0]} [nats-2]=${FREE[1]} [nats-3]=${FREE[2]})
declare -A MONITOR_PORT=([nats-1]=${FREE[3]} [nats-2]=${FREE[4]} [nats-3]=${FREE[5]})
declare -A HTTP_PORT=([producer-a]=${FREE[6]} [producer-b]=${FREE[7]})
declare -A PORT=([producer-a]=${FREE[8]} [producer-b]=${FREE[9]}
  [cluster-push]=${FREE[10]} [cluster-poll]=${FREE[11]} [cluster-long-poll]=${FREE[12]})
declare -A MODE=([cluster-push]=READ_MODE_PUSH [cluster-poll]=READ_MODE_POLL
  [cluster-long-poll]=READ_MODE_LONG_POLL)

# What the compose file reads from the environment; everything else is the file's default.
export PUSHPULL_IMAGE=$IMAGE PUSHPULL_NATS_IMAGE=$NATS_IMAGE PUSHPULL_BUILD_TARGET=prebuilt
export PUSHPULL_RUNTIME_IMAGE=$BASE_IMAGE PUSHPULL_BIND=127.0.0.1
export PUSHPULL_NATS_1_PORT=${NATS_PORT[nats-1]} PUSHPULL_NATS_2_PORT=${NATS_PORT[nats-2]}
export PUSHPULL_NATS_3_PORT=${NATS_PORT[nats-3]}
export PUSHPULL_NATS_1_MONITOR_PORT=${MONITOR_PORT[nats-1]}
export PUSHPULL_NATS_2_MONITOR_PORT=${MONITOR_PORT[nats-2]}
export PUSHPULL_NATS_3_MONITOR_PORT=${MONITOR_PORT[nats-3]}
export PUSHPULL_PRODUCER_A_PORT=${PORT[producer-a]} PUSHPULL_PRODUCER_B_PORT=${PORT[producer-b]}
export PUSHPULL_PRODUCER_A_HTTP_PORT=${HTTP_PORT[producer-a]}
export PUSHPULL_PRODUCER_B_HTTP_PORT=${HTTP_PORT[producer-b]}
export PUSHPULL_CLUSTER_PUSH_PORT=${PORT[cluster-push]} PUSHPULL_CLUSTER_POLL_PORT=${PORT[cluster-poll]}
export PUSHPULL_CLUSTER_LONG_POLL_PORT=${PORT[cluster-long-poll]}
# The checks rely on these two defaults; pin them against the caller's environment.
export PRODUCER_DEMO_RATE=20 CONSUMER_FROM=earliest
# As in 50-compose.sh: Compose v2's own builder, without buildx.
export COMPOSE_BAKE=false

# ---------------------------------------------------------------- helpers
projects=()
declare -A project_compose=()
DC_LOG=$(mktemp)
# Every call names the profile: Compose v2 leaves the services of a profile not named out of
# `ps` and `down`.
dc() { timeout 180 $COMPOSE --profile cluster "$@"; }
# Compose commands whose progress output would drown the checks: kept in $DC_LOG, shown on failure.
dcq() { echo "\$ $COMPOSE --profile cluster $*" >>"$DC_LOG"; timeout 180 $COMPOSE --profile cluster "$@" >>"$DC_LOG" 2>&1; }
cleanup() {
  local project
  for project in "${projects[@]}"; do
    COMPOSE_PROJECT_NAME=$project timeout 120 ${project_compose[$project]} --profile cluster down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    # Belt and braces: whatever compose left (it should leave nothing).
    docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm >/dev/null 2>&1 || true
  done
  docker image rm "$IMAGE" "$NATS_IMAGE" >/dev/null 2>&1 || true
  rm -f "$DC_LOG"
}
trap cleanup EXIT

declare -A CID=()
container() { echo "${CID[$1]:-}"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(container "$1")" 2>/dev/null; }
wait_for() { # wait_for SECONDS COMMAND...: retries until the command succeeds or the time is up.
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}
is_healthy() { [ "$(health "$1")" = healthy ]; }
all_healthy() {
  local service
  for service in "$@"; do is_healthy "$service" || return 1; done
}
eq() { [ "$1" = "$2" ] || { echo "       expected $2, got $1"; return 1; }; }
gt() { [ "$1" -gt "$2" ] || { echo "       expected > $2, got $1"; return 1; }; }
ne() { [ "$1" != "$2" ] || { echo "       expected something other than $2"; return 1; }; }

# A NATS node's monitoring endpoint, from the host: JSON on stdout.
monitor() { curl -fsS --max-time 3 "http://127.0.0.1:${MONITOR_PORT[$1]}$2"; }
# A field of a node's monitoring JSON, by a Python expression on `d`.
monitor_field() {
  monitor "$1" "$2" | python3 -c "import json, sys; d = json.load(sys.stdin); print($3)"
}
# The three nodes name one meta leader, one of them, of a meta group of 3.
one_meta_leader() {
  local node leader first=""
  for node in "${NATS_NODES[@]}"; do
    leader=$(monitor_field "$node" /jsz "d.get('meta_cluster', {}).get('leader', '')") || return 1
    [ -n "$leader" ] || return 1
    [ -n "$first" ] || first=$leader
    [ "$leader" = "$first" ] || return 1
    [ "$(monitor_field "$node" /jsz "d['meta_cluster'].get('cluster_size')")" = 3 ] || return 1
  done
  META_LEADER=$first
  case " ${NATS_NODES[*]} " in *" $first "*) ;; *) return 1 ;; esac
}

# Stats of one consumer, through its GetStats, as "name: value" lines in STATS[name].
declare -A STATS=()
stats() {
  STATS=()
  local name value
  while IFS=': ' read -r name value; do STATS[$name]=$value; done < <(
    "$STATS_BIN" stats --address "127.0.0.1:${PORT[$1]}" --timeout 3s 2>/dev/null)
  [ -n "${STATS[mode]:-}" ]
}
# The consumer is connected and past the given sequence.
past() { stats "$1" && [ "${STATS[connected]}" = true ] && [ "${STATS[last_sequence]}" -gt "$2" ]; }
# A producer's log_id, from its HTTP side's poll of the oldest event.
producer_log_id() {
  local answer
  answer=$(curl -fsS --max-time 3 "http://127.0.0.1:${HTTP_PORT[$1]}/poll?after=0&max_events=1") || return 1
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["log_id"])' "$answer"
}
not_running() { [ "$(docker inspect -f '{{.State.Running}}' "$(container "$1")")" = false ]; }
project_volumes() { docker volume ls -q --filter "label=com.docker.compose.project=$1" | wc -l; }
project_containers() { docker ps -aq --filter "label=com.docker.compose.project=$1" | wc -l; }
show_state() {
  echo "--- compose output"; tail -n 30 "$DC_LOG"
  echo "--- ps"; dc ps -a || true
  echo "--- logs"; dc logs --no-color --tail 15 || true
}

# ---------------------------------------------------------------- one run
scenario() {
  COMPOSE=$1
  local project=pushpull-ci-cluster-$$-v1
  [ "$COMPOSE" = "docker-compose" ] || project=pushpull-ci-cluster-$$-v2
  export COMPOSE_PROJECT_NAME=$project
  projects+=("$project"); project_compose[$project]=$COMPOSE
  local failed_before=$failed t0=$SECONDS service node
  phase "$COMPOSE ($($COMPOSE version --short 2>/dev/null || $COMPOSE version | head -n 1)), project $project"

  check "the cluster profile's config is valid" dcq config -q
  check "the profile has the cluster's services" \
    eq "$(dc config --services | grep -cxE 'nats-[123]|producer-[ab]|cluster-(push|poll|long-poll)')" 8
  check "build the NATS and pushpull images (prebuilt targets)" dcq build --quiet nats-1 producer-a

  # -------- the NATS nodes alone: one JetStream cluster
  step "NATS cluster"
  if ! check "up -d ${NATS_NODES[*]}" dcq up -d "${NATS_NODES[@]}"; then show_state; return; fi
  for node in "${NATS_NODES[@]}"; do CID[$node]=$(dc ps -a -q "$node"); done
  check "only the three NATS containers" eq "$(project_containers "$project")" 3
  if ! check "the three NATS nodes healthy within 60 s" wait_for 60 all_healthy "${NATS_NODES[@]}"; then
    show_state; return
  fi
  echo "       healthy after $((SECONDS - t0))s; NATS image $(docker image inspect -f '{{.Size}}' "$NATS_IMAGE") bytes"
  check "one meta leader of 3, named by every node" wait_for 30 one_meta_leader
  echo "       meta leader ${META_LEADER:-none}"
  for node in "${NATS_NODES[@]}"; do
    check "$node: server_name $node" eq "$(monitor_field "$node" /varz "d['server_name']")" "$node"
    check "$node: max_payload 8 MB" eq "$(monitor_field "$node" /varz "d['max_payload']")" 8388608
    # Distinct servers, not routes: from 2.10 a server keeps a pool of routes to each other one.
    check "$node: routes to the other two" \
      eq "$(monitor_field "$node" /routez "len({r['remote_id'] for r in d['routes']})")" 2
    check "$node: its JetStream store on the volume at /data" \
      eq "$(monitor_field "$node" /jsz "d['config']['store_dir']")" /data/jetstream
    check "$node: runs as the image's unprivileged user (uid 10002)" \
      eq "$(docker exec "$(container "$node")" id -u)" 10002
    check "$node: restart policy unless-stopped" \
      eq "$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$(container "$node")")" unless-stopped
    check "$node: a JetStream round trip (R3 stream, 2 MiB message)" \
      python3 scripts/suites/nats_smoke.py "127.0.0.1:${NATS_PORT[$node]}" 3
  done

  if [ "$with_store" = true ]; then
    producers_and_consumers "$project"
  fi

  [ $failed -eq $failed_before ] || show_state
  # -------- down: nothing left behind
  step "down -v"
  check "down -v" dcq down -v --remove-orphans -t 5
  check "no container left" eq "$(project_containers "$project")" 0
  check "no volume left" eq "$(project_volumes "$project")" 0
  echo "       $COMPOSE run: $((SECONDS - t0))s"
}

# Steps 3 and 4: the producers on the JetStream cluster, and the consumers failing over.
producers_and_consumers() {
  local service log_id="" a_id
  declare -A last=()
  step "producers and consumers"
  if ! check "up -d the producers and consumers" dcq up -d "${PRODUCERS[@]}" "${CONSUMERS[@]}"; then
    show_state; return
  fi
  for service in "${PRODUCERS[@]}" "${CONSUMERS[@]}"; do CID[$service]=$(dc ps -a -q "$service"); done
  # The cluster's eight, and none of the default services (`producer`, `push`, ...).
  check "only the cluster's containers" eq "$(project_containers "$1")" 8
  if ! check "both producers and the three consumers healthy within 90 s" \
    wait_for 90 all_healthy "${PRODUCERS[@]}" "${CONSUMERS[@]}"; then
    show_state; return
  fi
  a_id=$(producer_log_id producer-a || true)
  check "producer-a serves a log" ne "${a_id:-}" ""
  check "producer-b serves the same log (log_id)" eq "$(producer_log_id producer-b || true)" "${a_id:-x}"

  step "events flow"
  for service in "${CONSUMERS[@]}"; do wait_for 30 past "$service" 20 || true; done
  sleep 2
  for service in "${CONSUMERS[@]}"; do
    if ! check "$service: GetStats answers" stats "$service"; then continue; fi
    check "$service: mode" eq "${STATS[mode]}" "${MODE[$service]}"
    check "$service: connected" eq "${STATS[connected]}" true
    check "$service: events flow" gt "${STATS[events_received]}" 20
    check "$service: 0 missed" eq "${STATS[events_missed]}" 0
    check "$service: 0 duplicates" eq "${STATS[duplicates_dropped]}" 0
    # From the oldest event of a log that started at 1: every sequence exactly once.
    check "$service: every event of the log (received = last_sequence)" \
      eq "${STATS[events_received]}" "${STATS[last_sequence]}"
    check "$service: the producers' log" eq "${STATS[log_id]}" "${a_id:-x}"
    [ -n "$log_id" ] || log_id=${STATS[log_id]}
    last[$service]=${STATS[last_sequence]}
  done

  # -------- producer-a goes away: the consumers go on through producer-b, in the same log
  step "stop producer-a"
  check "stop producer-a" dcq stop -t 10 producer-a
  check "producer-a is gone" wait_for 15 not_running producer-a
  for service in "${CONSUMERS[@]}"; do
    if ! check "$service: keeps receiving without producer-a (past $((${last[$service]:-0} + 40)))" \
      wait_for 45 past "$service" $((${last[$service]:-0} + 40)); then continue; fi
    check "$service: same log_id" eq "${STATS[log_id]}" "$log_id"
    check "$service: no log change" eq "${STATS[log_changes]}" 0
    check "$service: 0 missed through producer-b" eq "${STATS[events_missed]}" 0
    check "$service: 0 duplicates through producer-b" eq "${STATS[duplicates_dropped]}" 0
    check "$service: every event of the log once (received = last_sequence)" \
      eq "${STATS[events_received]}" "${STATS[last_sequence]}"
  done
  check "producer-b healthy throughout" is_healthy producer-b

  step "start producer-a"
  check "start producer-a" dcq start producer-a
  check "producer-a healthy again" wait_for 60 is_healthy producer-a
  check "producer-a back on the same log" eq "$(producer_log_id producer-a || true)" "$log_id"
}

# `|| true`: a failed check returns 1, so that `if ! check ...` can end a run early; under
# `set -e` that must not end the suite. The counts decide its exit status.
for compose in "${composes[@]}"; do scenario "$compose" || true; done

printf '\n55-compose-cluster: wall time %ss\n' $((SECONDS - started))
if [ "$with_store" = false ]; then
  echo "NOTE: the producers and consumers were not checked: this producer has no JetStream store"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
