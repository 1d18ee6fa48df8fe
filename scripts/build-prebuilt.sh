#!/usr/bin/env bash
# The binaries for the Dockerfile's `prebuilt` target, for machines whose containers cannot
# download crates: builds them on this host (`cargo build --release --locked`) and puts
# stripped copies in target/prebuilt/, the only part of target/ that .dockerignore lets into
# the build context. Symbols are about a quarter of each binary and nobody debugs inside the
# image; target/release/ keeps them, for backtraces and profilers on the host.
#
#   scripts/build-prebuilt.sh && docker build --target prebuilt -t pushpull .
#
# Where nats-server is installed (.ci/install.d/40-nats.sh: 2.15.1), a copy of it goes
# to target/prebuilt/ too, for the `prebuilt` target of the compose `cluster` profile's NATS image
# (deploy/nats/Dockerfile); PUSHPULL_NATS_SERVER names another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p pushpull-producer -p pushpull-consumer
mkdir -p target/prebuilt
for bin in producer consumer; do
  # Written under another name and renamed, so an interrupted run never leaves half a binary
  # where the image build would take it.
  if command -v strip >/dev/null 2>&1; then
    strip -o "target/prebuilt/$bin.part" "target/release/$bin"
  else
    echo "build-prebuilt: no strip (binutils) here; target/prebuilt/$bin keeps its symbols" >&2
    cp "target/release/$bin" "target/prebuilt/$bin.part"
  fi
  mv "target/prebuilt/$bin.part" "target/prebuilt/$bin"
done
staged=(target/prebuilt/producer target/prebuilt/consumer)

nats_server=${PUSHPULL_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
if [ -x "$nats_server" ]; then
  # Already stripped by Debian; copied as it is, under another name first like the others.
  cp "$nats_server" target/prebuilt/nats-server.part
  mv target/prebuilt/nats-server.part target/prebuilt/nats-server
  staged+=(target/prebuilt/nats-server)
else
  echo "build-prebuilt: no nats-server here; the NATS image's prebuilt target needs one" \
    "(.ci/install.d/40-nats.sh)" >&2
fi
ls -l "${staged[@]}"
