#!/usr/bin/env bash
# nats-server (Debian bookworm's, 2.9.10: JetStream and clustering) for the tests that run a
# real NATS JetStream cluster (testkit's `nats` helpers, scripts/nats-cluster.sh) and for the
# compose `cluster` profile's NATS image, which takes the host's /usr/sbin/nats-server where
# no registry can be reached (scripts/suites/55-compose-cluster.sh).
set -euo pipefail
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  export DEBIAN_FRONTEND=noninteractive
  # One `apt-get update` per CI run, shared with the other installers that need apt (a marker
  # younger than an hour).
  if [ -z "$(find /tmp/.pushpull-apt-updated -mmin -60 2>/dev/null)" ]; then
    apt-get update -qq && touch /tmp/.pushpull-apt-updated
  fi
  log=$(mktemp)
  apt-get install -y -qq --no-install-recommends nats-server >"$log" 2>&1 || { cat "$log"; exit 1; }
  rm -f "$log"
fi
/usr/sbin/nats-server --version
