#!/usr/bin/env bash
# The metrics suite parses /metrics with the Python Prometheus client's text parsers.
set -euo pipefail
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'prometheus-client==0.26.0'
fi
