#!/usr/bin/env bash
# buf (proto lint and breaking-change checks), from the npm package that ships its binary.
set -euo pipefail
if ! command -v buf >/dev/null 2>&1; then
  npm install --global --no-audit --no-fund @bufbuild/buf@1.75.0 >/dev/null
fi
