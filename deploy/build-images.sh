#!/usr/bin/env bash
# Build the compose deployment's images without any container registry, under podman:
#   1. the base: a Debian root made by debootstrap from the mirror apt already uses, imported
#      as localhost/debian:bookworm (skipped when that image exists);
#   2. localhost/virtcenter:latest (Dockerfile), localhost/virtcenter-postgres:15,
#      localhost/virtcenter-redis:7, localhost/virtcenter-haproxy:2.6 (deploy/images/*) FROM that base.
# The host's Debian sources and CA bundle are mounted only during the builds, so neither the
# mirror nor the CA ends up in an image. Unchanged inputs reuse podman's layer cache.
# Usage: deploy/build-images.sh [--base IMAGE]   (e.g. --base debian:bookworm with a registry)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE=localhost/debian:bookworm
if [ "${1:-}" = "--base" ]; then BASE="$2"; fi
log() { printf '[images] %s\n' "$*"; }

# The Debian sources apt uses here: deb822 files and sources.list lines naming a Debian
# suite (other vendors' lists would need keys the base does not have).
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/sources"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -e "$f" ] && grep -q 'Suites:.*bookworm' "$f" && grep -q 'URIs:.*debian' "$f" && cp "$f" "$WORK/sources/"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -e "$f" ] && grep -E '^deb .*debian.* bookworm' "$f" >>"$WORK/sources/debian.list" || true
done
# The first Debian URI apt uses (a URIs: field or a deb line; not the comments beside them).
MIRROR="$(grep -h -E '^(URIs:|deb )' "$WORK"/sources/* | grep -o -E 'https?://[^ ]*' | grep -v security | head -n1)"

if [ "$BASE" = localhost/debian:bookworm ] && ! podman image exists "$BASE"; then
  log "base: debootstrap --variant=minbase bookworm from $MIRROR"
  ROOTFS="$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log"; exit 1; }
  # The mirror stays out of the image; the builds mount the host's sources.
  rm -f "$ROOTFS/etc/apt/sources.list"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$ROOTFS"
  log "base: $BASE imported"
fi

CA=/etc/ssl/certs
MOUNTS=(-v "$WORK/sources:/etc/apt/sources.list.d:ro" -v "$CA:/run/host-ca:ro")
build() {
  local tag="$1" context="$2" file="$3"
  log "build $tag"
  podman build -q --build-arg "BASE=$BASE" "${MOUNTS[@]}" -t "$tag" -f "$file" "$context" >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log"; exit 1; }
}
build localhost/virtcenter-postgres:15 "$ROOT/deploy/images/postgres" "$ROOT/deploy/images/postgres/Dockerfile"
build localhost/virtcenter-redis:7 "$ROOT/deploy/images/redis" "$ROOT/deploy/images/redis/Dockerfile"
build localhost/virtcenter-haproxy:2.6 "$ROOT/deploy/images/haproxy" "$ROOT/deploy/images/haproxy/Dockerfile"
build localhost/virtcenter:latest "$ROOT" "$ROOT/Dockerfile"
log "done"
