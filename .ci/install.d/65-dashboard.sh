#!/usr/bin/env bash
# The dashboard suite drives Debian's chromium with the npm package playwright-core (which
# downloads no browser of its own; never `npx playwright install`).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # One `apt-get update` per CI run, shared with the other installers that need apt (a marker
  # younger than an hour).
  if [ -z "$(find /tmp/.pushpull-apt-updated -mmin -60 2>/dev/null)" ]; then
    apt-get update -qq && touch /tmp/.pushpull-apt-updated
  fi
  log=$(mktemp)
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >"$log" 2>&1 || { cat "$log"; exit 1; }
  rm -f "$log"
fi
prefix=/opt/pushpull-node
if [ ! -e "$prefix/node_modules/playwright-core/package.json" ]; then
  npm install --prefix "$prefix" --no-audit --no-fund --silent playwright-core@1.65.1 >/dev/null
fi
