#!/usr/bin/env bash
# nats-server (Debian's 2.9, JetStream and clustering): the JetStream store's tests start it.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1; then
  nats-server --version
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nats-server >/dev/null
nats-server --version
