#!/usr/bin/env bash
# docker compose, end to end, with the repository's own docker-compose.yml and Dockerfile:
#   1. bring the stack up; every service becomes healthy (through the binaries' `healthcheck`);
#   2. events flow to all four consumers (push, poll, long-poll, webhook): 0 missed, 0 duplicated, each
#      has every event of the log; the services run as a non-root user, each container declares
#      only its own ports, the image's binaries are stripped, and the logs are plain text (no
#      ANSI colour codes in `logs`);
#   3. the producer's log is on a named volume, so it outlives the producer: after a stop (observed)
#      and start, a `restart`, and a `kill -s KILL` and start, the consumers reconnect to the same
#      log (same log_id, no log change) and carry on from their cursors: 0 missed, 0 duplicated
#      (the webhook consumer: events that came twice, by Poll and webhook or redelivered, are
#      dropped and reported), still every event of the log exactly once;
#   4. the consumers stop, their containers are removed, and new ones start: each resumes
#      exactly after the checkpoint on its named volume;
#   5. `down` keeps the volumes: after `up`, new containers carry on in the same log, from their
#      checkpoints; `down -v` deletes them: the next `up` starts a new log (a new log_id), which
#      the consumers read from its first event;
#   6. the `tls` profile: a producer serving TLS with tokens (certificates and tokens from its
#      one-shot `tls-certs` service, in a volume) and two consumers reading it over TLS, healthy
#      through TLS healthchecks; they count events with 0 missed, and a plaintext call to the
#      TLS producer fails where one with its CA succeeds;
#   7. `down -v` leaves no container and no volume behind (also on failure: trap).
# Run once per Compose available: `docker compose` (v2) and `docker-compose` (1.29). Under CI
# both must be there (.ci/install.d/50-docker.sh installs them).
#
# Offline: no registry can be reached here, so the runtime base image is made locally with
# debootstrap (scripts/make-bookworm-base.sh, cached as $BASE_IMAGE), the binaries are built on
# the host (same glibc as bookworm; scripts/build-prebuilt.sh stages stripped copies) and the
# Dockerfile's `prebuilt` target copies them in. The compose file is used as it is; only environment variables are
# injected (image source, host ports, project name, and pinned PRODUCER_DEMO_RATE=20 /
# CONSUMER_FROM=earliest, which the checks rely on).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS

BASE_IMAGE=${PUSHPULL_CI_BASE_IMAGE:-pushpull-ci/bookworm-minbase:latest}
IMAGE=pushpull-ci/pushpull:test-$$
STATS_BIN=target/release/consumer

skip() { echo "50-compose: $*; skipping (exit 77)"; exit 77; }
command -v docker >/dev/null 2>&1 || skip "no docker CLI"
scripts/start-dockerd.sh || skip "no Docker engine"
composes=()
if docker compose version >/dev/null 2>&1; then composes+=("docker compose"); fi
if command -v docker-compose >/dev/null 2>&1; then composes+=("docker-compose"); fi
[ ${#composes[@]} -gt 0 ] || skip "neither docker compose (v2) nor docker-compose (1.29) found"
if [ "${CI:-}" = "true" ] && [ ${#composes[@]} -lt 2 ]; then
  skip "CI needs both Compose v2 and 1.29; found only: ${composes[*]}"
fi

passed=0; failed=0
check() { # check DESCRIPTION COMMAND...: one counted check
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "  ok   $what"
  else failed=$((failed + 1)); echo "  FAIL $what"; fi
}
phase() { printf '\n--- %s (%ss)\n' "$*" $((SECONDS - started)); }
step() { printf '  -- %s (%ss)\n' "$*" $((SECONDS - started)); }

# ---------------------------------------------------------------- the images
phase "base image $BASE_IMAGE"
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || skip "no debootstrap to make $BASE_IMAGE"
  scripts/make-bookworm-base.sh "$BASE_IMAGE" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
echo "$BASE_IMAGE: $(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes"

phase "host build (scripts/build-prebuilt.sh: cargo build --release --locked, stripped copies)"
timeout 900 scripts/build-prebuilt.sh

# Host ports: free ones, so a running `docker compose up` or another test is no obstacle.
read -r PRODUCER_PORT PUSH_PORT POLL_PORT LONG_POLL_PORT WEBHOOK_PORT \
  TLS_PRODUCER_PORT TLS_HTTP_PORT TLS_PUSH_PORT TLS_LONG_POLL_PORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
declare -A PORT=([push]=$PUSH_PORT [poll]=$POLL_PORT [long-poll]=$LONG_POLL_PORT [webhook]=$WEBHOOK_PORT
  [push-tls]=$TLS_PUSH_PORT [long-poll-tls]=$TLS_LONG_POLL_PORT)
declare -A MODE=([push]=READ_MODE_PUSH [poll]=READ_MODE_POLL [long-poll]=READ_MODE_LONG_POLL
  [webhook]=READ_MODE_WEBHOOK)
# The ports each container declares (docker-compose.yml's `expose:`; the image declares none):
# its own gRPC port, the producer's HTTP side, the consumers' /metrics.
declare -A EXPOSED=([producer]="50051/tcp 8080/tcp" [push]="50061/tcp 9464/tcp"
  [poll]="50062/tcp 9464/tcp" [long-poll]="50063/tcp 9464/tcp" [webhook]="50064/tcp 9464/tcp")
CONSUMERS=(push poll long-poll webhook)

# What the compose file reads from the environment; everything else is the file's default.
export PUSHPULL_IMAGE=$IMAGE PUSHPULL_BUILD_TARGET=prebuilt PUSHPULL_RUNTIME_IMAGE=$BASE_IMAGE
export PUSHPULL_BIND=127.0.0.1 PUSHPULL_PRODUCER_PORT=$PRODUCER_PORT PUSHPULL_PUSH_PORT=$PUSH_PORT
export PUSHPULL_POLL_PORT=$POLL_PORT PUSHPULL_LONG_POLL_PORT=$LONG_POLL_PORT PUSHPULL_WEBHOOK_PORT=$WEBHOOK_PORT
export PUSHPULL_TLS_PRODUCER_PORT=$TLS_PRODUCER_PORT PUSHPULL_TLS_HTTP_PORT=$TLS_HTTP_PORT
export PUSHPULL_TLS_PUSH_PORT=$TLS_PUSH_PORT PUSHPULL_TLS_LONG_POLL_PORT=$TLS_LONG_POLL_PORT
# The checks rely on these two defaults; pin them against the caller's environment.
export PRODUCER_DEMO_RATE=20 CONSUMER_FROM=earliest

# Compose v2 (2.37 on) builds through `buildx bake`, which is not installed here, and falls back
# to its own builder with a warning; COMPOSE_BAKE=false asks for that builder directly (2.39 on
# answer with a deprecation warning instead). Either way the build output goes to $DC_LOG.
export COMPOSE_BAKE=false

# ---------------------------------------------------------------- helpers
projects=()
DC_LOG=$(mktemp)
dc() { timeout 180 $COMPOSE "$@"; }
# Compose commands whose progress output would drown the checks: kept in $DC_LOG, shown on failure.
dcq() { echo "\$ $COMPOSE $*" >>"$DC_LOG"; timeout 180 $COMPOSE "$@" >>"$DC_LOG" 2>&1; }
cleanup() {
  local project
  for project in "${projects[@]}"; do
    COMPOSE_PROJECT_NAME=$project timeout 120 ${project_compose[$project]} --profile tls down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    # Belt and braces: whatever compose left (it should leave nothing).
    docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm >/dev/null 2>&1 || true
  done
  docker image rm "$IMAGE" >/dev/null 2>&1 || true
  rm -f "$DC_LOG"
}
declare -A project_compose=()
trap cleanup EXIT

# Stats of one consumer, through its GetStats, as "name: value" lines in STATS[name].
declare -A STATS=()
stats() {
  STATS=()
  local name value
  while IFS=': ' read -r name value; do STATS[$name]=$value; done < <(
    "$STATS_BIN" stats --address "127.0.0.1:${PORT[$1]}" --timeout 3s 2>/dev/null)
  [ -n "${STATS[mode]:-}" ]
}
# Container ids, looked up once after `up` (stop and start keep them): Compose 1.29 takes most of
# a second per call, too slow to ask it in every polling loop.
declare -A CID=()
container() { echo "${CID[$1]:-}"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(container "$1")" 2>/dev/null; }
# wait_for SECONDS COMMAND...: retries until the command succeeds or the time is up.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}
is_healthy() { [ "$(health "$1")" = healthy ]; }
all_healthy() {
  local service
  for service in producer "${CONSUMERS[@]}"; do is_healthy "$service" || return 1; done
}
# A consumer's cursor file, read from its (possibly stopped) container.
checkpoint_field() { docker cp "$(container "$1"):/var/lib/pushpull/cursor" - | tar -xO | sed -n "s/^$2=//p"; }
# The consumer has seen the producer go away.
disconnected() { stats "$1" && [ "${STATS[connected]}" = false ]; }
# After the producer came back on the same volume: each consumer reconnects to the same log and
# goes on past where it was (the sequences in the associative array named $2, which is updated),
# with 0 missed, 0 duplicated and every event of the log exactly once (it read from the first).
# Sets STATS_AFTER[service/reconnects].
declare -A STATS_AFTER=()
same_log_after() {
  local what=$1 service
  local -n where=$2
  for service in "${CONSUMERS[@]}"; do
    if ! check "$service: back and past $((${where[$service]:-0} + 10)) after $what" \
      wait_for 40 past "$service" $((${where[$service]:-0} + 10)); then continue; fi
    check "$service: same log_id after $what" eq "${STATS[log_id]}" "$log_id"
    check "$service: no log change after $what" eq "${STATS[log_changes]}" 0
    check "$service: 0 missed after $what" eq "${STATS[events_missed]}" 0
    if [ "$service" = webhook ]; then
      # Webhooks are at least once: while the producer was away the consumer Polled, and when
      # it is back its Polls and the producer's deliveries can bring the same events; a
      # producer killed between a 2xx and writing its cursor (every 200 ms) sends that batch
      # again. The consumer drops them by sequence; the next check (received = last_sequence)
      # is what says nothing was used twice.
      echo "       webhook: $((STATS[duplicates_dropped] - ${STATS_AFTER[webhook/duplicates]:-0})) events that came twice (Poll and webhook, or redelivered) dropped after $what"
    else
      check "$service: 0 duplicates after $what" eq "${STATS[duplicates_dropped]}" "${STATS_AFTER[$service/duplicates]:-0}"
    fi
    STATS_AFTER[$service/duplicates]=${STATS[duplicates_dropped]}
    check "$service: every event of the log once after $what (received = last_sequence)" \
      eq "${STATS[events_received]}" "${STATS[last_sequence]}"
    STATS_AFTER[$service/reconnects]=${STATS[reconnects]}
    where[$service]=${STATS[last_sequence]}
  done
}
# The default services' five named volumes exist in project $1.
kept_volumes() {
  local volume
  for volume in producer-data push-checkpoint poll-checkpoint long-poll-checkpoint webhook-checkpoint; do
    docker volume inspect "$1_$volume" >/dev/null 2>&1 || { echo "       no volume $1_$volume"; return 1; }
  done
}
# When the services' containers last started, one line each.
started() {
  local service
  for service in "$@"; do docker inspect -f '{{.State.StartedAt}}' "$(container "$service")"; done
}
not_running() { [ "$(docker inspect -f '{{.State.Running}}' "$(container "$1")")" = false ]; }
# The consumer is connected again and past the given sequence.
past() { stats "$1" && [ "${STATS[connected]}" = true ] && [ "${STATS[last_sequence]}" -gt "$2" ]; }
eq() { [ "$1" = "$2" ] || { echo "       expected $2, got $1"; return 1; }; }
not() { ! "$@" >/dev/null 2>&1; }
all_of() { local test=$1 one; shift; for one in "$@"; do "$test" "$one" || return 1; done; }
ge() { [ "$1" -ge "$2" ] || { echo "       expected >= $2, got $1"; return 1; }; }
gt() { [ "$1" -gt "$2" ] || { echo "       expected > $2, got $1"; return 1; }; }
ne() { [ "$1" != "$2" ] || { echo "       expected something other than $2"; return 1; }; }
# The ports a container declares, as "PORT/PROTO ..." in order. Compose v2 records an `expose:`
# entry both as given ("8080") and as "8080/tcp"; both mean the same port.
exposed() {
  docker inspect -f '{{range $port, $_ := .Config.ExposedPorts}}{{$port}}{{"\n"}}{{end}}' "$(container "$1")" |
    sed '/^$/d; /\//!s|$|/tcp|' | sort -u | paste -sd ' '
}
# The ELF file's section names (a symbol table is `.symtab`, what `strip` removes).
sections() { readelf -S -W "$1" | sed -n 's/^ *\[ *[0-9]*\] \([^ ]*\).*/\1/p'; }
# The image's copy of a binary is stripped, the host's target/release one is not.
image_binary_stripped() {
  local copy in_image on_host
  copy=$(mktemp)
  docker cp "$(container producer):/usr/local/bin/$1" - | tar -xO >"$copy"
  in_image=$(sections "$copy"); rm -f "$copy"
  on_host=$(sections "target/release/$1")
  grep -qx '\.text' <<<"$in_image" || { echo "       cannot read /usr/local/bin/$1 from the image"; return 1; }
  ! grep -qx '\.symtab' <<<"$in_image" || { echo "       /usr/local/bin/$1 in the image has a symbol table"; return 1; }
  grep -qx '\.symtab' <<<"$on_host" || { echo "       target/release/$1 lost its symbols"; return 1; }
}
# The services' logs as `logs` shows them are plain text: the binaries colour only a terminal,
# and a container's stderr is not one. Non-empty, or the check would prove nothing.
plain_logs() {
  local logs escaped
  logs=$($COMPOSE logs --no-color 2>&1) || return 1
  grep -q 'producer serving' <<<"$logs" || { echo "       no 'producer serving' line in the logs"; return 1; }
  escaped=$(grep -c $'\x1b\[' <<<"$logs" || true)
  [ "$escaped" -eq 0 ] || { echo "       $escaped lines with ANSI escapes, e.g. $(grep -m 1 $'\x1b\[' <<<"$logs" | cat -v)"; return 1; }
}
show_state() {
  echo "--- compose output"; tail -n 30 "$DC_LOG"
  echo "--- ps"; dc ps -a || true
  echo "--- logs"; dc logs --no-color --tail 15 || true
}

# ---------------------------------------------------------------- one run
scenario() {
  COMPOSE=$1
  local project=pushpull-ci-$$-v1
  [ "$COMPOSE" = "docker-compose" ] || project=pushpull-ci-$$-v2
  export COMPOSE_PROJECT_NAME=$project
  projects+=("$project"); project_compose[$project]=$COMPOSE
  local failed_before=$failed t0=$SECONDS service
  STATS_AFTER=()
  phase "$COMPOSE ($($COMPOSE version --short 2>/dev/null || $COMPOSE version | head -n 1)), project $project"

  check "build (prebuilt target)" dcq build --quiet producer
  if ! check "up -d" dcq up -d; then show_state; return; fi
  for service in producer "${CONSUMERS[@]}"; do CID[$service]=$(dc ps -a -q "$service"); done
  if ! check "all five services healthy within 90 s" wait_for 90 all_healthy; then show_state; return; fi
  echo "       healthy after $((SECONDS - t0))s; image $(docker image inspect -f '{{.Size}}' "$IMAGE") bytes"
  check "runs as the unprivileged user (uid 10001)" eq "$(docker exec "$(container producer)" id -u)" 10001
  for service in producer "${CONSUMERS[@]}"; do
    check "$service: restart policy unless-stopped" \
      eq "$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$(container "$service")")" unless-stopped
    check "$service: declares only its own ports (${EXPOSED[$service]})" eq "$(exposed "$service")" "${EXPOSED[$service]}"
  done
  for bin in producer consumer; do
    check "$bin: stripped in the image, symbols kept in target/release" image_binary_stripped "$bin"
  done

  # -------- events flow
  step "events flow"
  local log_id=""
  declare -A last=()
  for service in "${CONSUMERS[@]}"; do wait_for 20 past "$service" 20 || true; done
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
    [ -n "$log_id" ] || log_id=${STATS[log_id]}
    check "$service: same log as the others" eq "${STATS[log_id]}" "$log_id"
    last[$service]=${STATS[last_sequence]}
  done
  sleep 1.5
  for service in "${CONSUMERS[@]}"; do
    check "$service: keeps receiving" wait_for 10 past "$service" "${last[$service]:-0}"
  done
  for service in "${CONSUMERS[@]}"; do
    check "$service: summary lines in the compose logs" \
      bash -c "$COMPOSE logs --no-color $service 2>&1 | grep -q summary"
  done
  check "logs are plain text: no ANSI escape (ESC [) in any service's logs" plain_logs

  # -------- the producer goes away and comes back, three ways; its log is on the producer-data
  # volume, so each time it is the same log and the consumers carry on from their cursors
  step "producer stop, observed, and start"
  check "stop producer" dcq stop -t 10 producer
  for service in "${CONSUMERS[@]}"; do
    check "$service: notices the producer is gone" wait_for 20 disconnected "$service"
    last[$service]=${STATS[last_sequence]:-0}
    check "$service: had every event of the log" eq "${STATS[events_received]:-}" "${STATS[last_sequence]:-x}"
  done
  check "start producer" dcq start producer
  check "producer healthy again" wait_for 60 is_healthy producer
  same_log_after "the stop and start" last
  for service in "${CONSUMERS[@]}"; do
    check "$service: reconnects counted" gt "${STATS_AFTER[$service/reconnects]:-0}" 0
  done

  step "docker compose restart producer"
  local consumers_started
  consumers_started=$(started "${CONSUMERS[@]}")
  check "restart producer" dcq restart -t 10 producer
  check "producer healthy after the restart" wait_for 60 is_healthy producer
  check "the consumers were not restarted with it" eq "$(started "${CONSUMERS[@]}")" "$consumers_started"
  same_log_after "the restart" last

  step "docker compose kill -s KILL producer, then start"
  local started_before
  started_before=$(started producer)
  check "kill -s KILL producer" dcq kill -s KILL producer
  check "the producer is gone" wait_for 10 not_running producer
  check "the producer died of SIGKILL (exit 137)" eq "$(docker inspect -f '{{.State.ExitCode}}' "$(container producer)")" 137
  # Docker does not restart a container it was told to kill (restart: unless-stopped): start it.
  check "start producer" dcq start producer
  check "producer healthy after the kill" wait_for 60 is_healthy producer
  check "the producer is a new process" ne "$(started producer)" "$started_before"
  same_log_after "the kill" last

  # -------- the consumers stop and start again, in new containers (only the named volumes
  # carry over): each resumes right after its checkpoint
  step "consumers stop and start"
  check "stop consumers" dcq stop -t 10 "${CONSUMERS[@]}"
  declare -A saved=()
  for service in "${CONSUMERS[@]}"; do
    saved[$service]=$(checkpoint_field "$service" after_sequence || true)
    check "$service: checkpoint saved at stop, on the log" \
      eq "$(checkpoint_field "$service" log_id || true)" "$log_id"
    check "$service: checkpoint at or past what it had read" ge "${saved[$service]:-0}" "${last[$service]:-1}"
  done
  check "remove the consumers' containers" dcq rm -f "${CONSUMERS[@]}"
  sleep 3 # the producer moves on (about 60 events) while they are down
  check "start consumers in new containers" dcq up -d --no-deps "${CONSUMERS[@]}"
  for service in "${CONSUMERS[@]}"; do
    local old=${CID[$service]}
    CID[$service]=$(dc ps -a -q "$service")
    check "$service: a new container" ne "${CID[$service]}" "$old"
  done
  for service in "${CONSUMERS[@]}"; do
    if ! check "$service: back and past its checkpoint" wait_for 40 past "$service" $((${saved[$service]:-0} + 60)); then continue; fi
    # Fresh counters in a new process: everything received came after the checkpoint.
    check "$service: resumed right after its checkpoint" \
      eq $((STATS[last_sequence] - STATS[events_received])) "${saved[$service]:-x}"
    check "$service: same log, no log change" eq "${STATS[log_id]}/${STATS[log_changes]}" "$log_id/0"
    check "$service: 0 missed after resuming" eq "${STATS[events_missed]}" 0
    check "$service: 0 duplicates after resuming" eq "${STATS[duplicates_dropped]}" 0
  done
  check "all healthy" wait_for 30 all_healthy

  # -------- down keeps the volumes: new containers, the same log (this is what the producer-data
  # volume is for; a restart alone keeps the container's own files too)
  step "down, then up: the same log, from the volume"
  for service in "${CONSUMERS[@]}"; do
    stats "$service" && last[$service]=${STATS[last_sequence]}
  done
  check "down (keeping the volumes)" dcq down -t 5
  check "the five volumes are kept" kept_volumes "$project"
  # Compose 1.29 makes every volume the file declares at `up`, so also the `cluster` profile's
  # (empty, and gone with `down -v`); Compose v2 only those of the services it starts.
  if [ "$COMPOSE" != docker-compose ]; then
    check "no other volume" eq "$(docker volume ls -q --filter "label=com.docker.compose.project=$project" | wc -l)" 5
  fi
  if ! check "up -d after down" dcq up -d; then show_state; return; fi
  for service in producer "${CONSUMERS[@]}"; do CID[$service]=$(dc ps -a -q "$service"); done
  if ! check "all five services healthy after down and up" wait_for 90 all_healthy; then show_state; return; fi
  for service in "${CONSUMERS[@]}"; do
    if ! check "$service: back and past $((${last[$service]:-0} + 10))" wait_for 40 past "$service" $((${last[$service]:-0} + 10)); then continue; fi
    check "$service: same log_id after down and up" eq "${STATS[log_id]}" "$log_id"
    check "$service: no log change after down and up" eq "${STATS[log_changes]}" 0
    check "$service: resumed from its checkpoint, not from the start" \
      ge $((STATS[last_sequence] - STATS[events_received])) "${last[$service]:-1}"
    check "$service: 0 missed after down and up" eq "${STATS[events_missed]}" 0
    check "$service: 0 duplicates after down and up" eq "${STATS[duplicates_dropped]}" 0
  done

  # -------- down -v deletes the log with its volume: the next up is a new log, read from 1
  step "down -v, then up: a fresh log"
  check "down -v" dcq down -v --remove-orphans -t 5
  check "no volume left after down -v" eq "$(docker volume ls -q --filter "label=com.docker.compose.project=$project" | wc -l)" 0
  if ! check "up -d again" dcq up -d; then show_state; return; fi
  for service in producer "${CONSUMERS[@]}"; do CID[$service]=$(dc ps -a -q "$service"); done
  if ! check "all five services healthy again within 90 s" wait_for 90 all_healthy; then show_state; return; fi
  local fresh_log=""
  for service in "${CONSUMERS[@]}"; do
    if ! check "$service: reads the fresh log" wait_for 40 past "$service" 10; then continue; fi
    [ -n "$fresh_log" ] || fresh_log=${STATS[log_id]}
    check "$service: a new log_id" ne "${STATS[log_id]}" "$log_id"
    check "$service: same fresh log as the others" eq "${STATS[log_id]}" "$fresh_log"
    check "$service: no log change (its checkpoint went with its volume)" eq "${STATS[log_changes]}" 0
    check "$service: 0 missed on the fresh log" eq "${STATS[events_missed]}" 0
    check "$service: 0 duplicates on the fresh log" eq "${STATS[duplicates_dropped]}" 0
    check "$service: every event of the fresh log (received = last_sequence)" \
      eq "${STATS[events_received]}" "${STATS[last_sequence]}"
  done
  check "all healthy at the end" wait_for 30 all_healthy

  # -------- the tls profile, beside the default services
  step "--profile tls: TLS and tokens"
  if check "--profile tls up -d push-tls long-poll-tls" dcq --profile tls up -d push-tls long-poll-tls; then
    for service in producer-tls push-tls long-poll-tls; do CID[$service]=$($COMPOSE --profile tls ps -a -q "$service"); done
    check "producer-tls, push-tls, long-poll-tls healthy (TLS healthchecks) within 60 s" \
      wait_for 60 all_of is_healthy producer-tls push-tls long-poll-tls
    check "tls-certs ran once and succeeded" \
      eq "$(docker inspect -f '{{.State.ExitCode}}' "$($COMPOSE --profile tls ps -a -q tls-certs)")" 0
    for service in push-tls long-poll-tls; do
      if ! check "$service: reads over TLS with its token" wait_for 30 past "$service" 10; then continue; fi
      check "$service: 0 missed" eq "${STATS[events_missed]}" 0
      check "$service: every event of the log (received = last_sequence)" \
        eq "${STATS[events_received]}" "${STATS[last_sequence]}"
    done
    local ca
    ca=$(mktemp)
    docker exec "$(container producer-tls)" cat /certs/ca.pem >"$ca"
    check "a TLS health check of producer-tls with its CA succeeds" \
      "$STATS_BIN" healthcheck --address "https://127.0.0.1:$TLS_PRODUCER_PORT" --tls-ca "$ca" --timeout 3s
    check "a plaintext call to producer-tls fails" \
      not "$STATS_BIN" healthcheck --address "127.0.0.1:$TLS_PRODUCER_PORT" --timeout 3s
    rm -f "$ca"
  fi

  [ $failed -eq $failed_before ] || show_state
  # -------- down: nothing left behind
  step "down"
  check "down -v" dcq --profile tls down -v --remove-orphans -t 5
  check "no container left" eq "$(docker ps -aq --filter "label=com.docker.compose.project=$project" | wc -l)" 0
  check "no volume left" eq "$(docker volume ls -q --filter "label=com.docker.compose.project=$project" | wc -l)" 0
  docker image rm "$IMAGE" >/dev/null 2>&1 || true
  echo "       $COMPOSE run: $((SECONDS - t0))s"
}

for compose in "${composes[@]}"; do scenario "$compose"; done

printf '\n50-compose: wall time %ss\n' $((SECONDS - started))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
