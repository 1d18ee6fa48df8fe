#!/usr/bin/env bash
# Makes sure a Docker engine answers: starts `dockerd` in the background when none runs (a
# machine without systemd, as CI here, or after a reboot) and waits until `docker info` works.
# Used by .ci/install.d/50-docker.sh and by scripts/suites/50-compose.sh. Exits non-zero when
# there is no engine to start or it does not come up within 60 s.
set -euo pipefail

docker info >/dev/null 2>&1 && exit 0
command -v docker >/dev/null 2>&1 || { echo "start-dockerd: no docker CLI" >&2; exit 1; }
if ! pgrep -x dockerd >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || { echo "start-dockerd: no dockerd" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] || { echo "start-dockerd: starting dockerd needs root" >&2; exit 1; }
  # Detached (own session, no inherited stdio), so it outlives the script that started it and
  # holds no pipe of the caller open.
  setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "start-dockerd: the engine did not answer within 60 s; see /var/log/dockerd.log" >&2
tail -n 20 /var/log/dockerd.log >&2 2>/dev/null || true
exit 1
