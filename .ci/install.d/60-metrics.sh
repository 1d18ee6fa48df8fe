#!/usr/bin/env bash
# The metrics suite parses /metrics with the Python Prometheus client's text parsers, and has a
# real Prometheus server (Debian's package, standing in for the image) scrape both services.
set -euo pipefail
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'prometheus-client==0.26.0'
fi
if ! command -v prometheus >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # One `apt-get update` per CI run, shared with the other installers that need apt (a marker
  # younger than an hour).
  if [ -z "$(find /tmp/.pushpull-apt-updated -mmin -60 2>/dev/null)" ]; then
    apt-get update -qq && touch /tmp/.pushpull-apt-updated
  fi
  log=$(mktemp)
  apt-get install -y -qq --no-install-recommends prometheus >"$log" 2>&1 || { cat "$log"; exit 1; }
  rm -f "$log"
fi
