#!/usr/bin/env bash
# Builds the local base image for hosts that reach no image registry: Debian 12 (minbase) made by
# debootstrap from Debian's package mirror, with bookworm-updates and bookworm-security enabled,
# imported with `docker import`. Usage: make-base-image.sh [TAG]  (default onnx-serving-base:bookworm)
set -euo pipefail
tag=${1:-onnx-serving-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if docker image inspect "$tag" >/dev/null 2>&1 && [ "${FORCE:-0}" != 1 ]; then
  echo "base image $tag already exists (FORCE=1 to rebuild)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap (or make setup)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "debootstrap bookworm into $dir (about a minute) ..."
debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
rm -f "$dir.log"
cat >"$dir/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change 'LABEL io.onnx-serving.role=base org.opencontainers.image.title=onnx-serving-base' \
  - "$tag" >/dev/null
echo "base image $tag: $(docker image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec) ready"
