#!/usr/bin/env bash
# A Debian bookworm runtime base for the Dockerfile (its RUNTIME_IMAGE), made from Debian's own
# packages where no image registry can be reached: `debootstrap --variant=minbase bookworm`,
# trimmed like debian:bookworm-slim (no apt cache or lists, docs, man pages, locales: less than
# half the size), then `docker import`ed. Needs root, debootstrap and a Debian mirror.
# Used by scripts/suites/50-compose.sh and the README's offline path.
#
#   scripts/make-bookworm-base.sh [IMAGE]      (default pushpull/bookworm-minbase:latest)
set -euo pipefail

image=${1:-pushpull/bookworm-minbase:latest}
command -v debootstrap >/dev/null 2>&1 ||
  { echo "make-bookworm-base: no debootstrap (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "make-bookworm-base: debootstrap needs root" >&2; exit 1; }

rootfs=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$rootfs" "$log"' EXIT
if ! timeout 600 debootstrap --variant=minbase bookworm "$rootfs" >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "make-bookworm-base: debootstrap failed" >&2
  exit 1
fi
tar -C "$rootfs" --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' \
  --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
  --exclude='./usr/share/locale/*' --exclude='./usr/share/info/*' -c . |
  docker import -c 'CMD ["bash"]' - "$image" >/dev/null
echo "$image: $(docker image inspect -f '{{.Size}}' "$image") bytes"
