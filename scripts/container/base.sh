#!/usr/bin/env bash
# Makes the local Debian base image the relay image is built from in the tests
# (no image registry is reachable on the test machines): debootstrap's minbase
# of bookworm from the mirror apt uses, imported into podman as
# localhost/cw-debian-base:bookworm. Cached twice: the image itself, and its
# tarball in ${CW_CACHE_DIR:-~/.cache/cw} (re-imported if podman's store was reset).
set -euo pipefail
IMAGE=localhost/cw-debian-base:bookworm
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}"
cache="${CW_CACHE_DIR:-${HOME:-/root}/.cache/cw}"
tarball="$cache/debian-bookworm-minbase.tar"
if podman image exists "$IMAGE"; then
  : # made before
elif [ ! -s "$tarball" ]; then
  mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -oE 'https?://[^ ]+' | head -1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  echo "container base: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  mkdir -p "$cache"
  tar -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
if ! podman image exists "$IMAGE"; then
  podman import -q "$tarball" "$IMAGE" >/dev/null
  echo "container base: $IMAGE"
fi

# Deno's "bin" image stand-in: the deno binary of this machine as /deno, for the
# Containerfile's DENO_IMAGE (a registry would give docker.io/denoland/deno:bin-VERSION)
version=$(deno --version | head -1 | awk '{print $2}')
DENO_IMAGE="localhost/cw-deno-bin:$version"
if ! podman image exists "$DENO_IMAGE"; then
  dir=$(mktemp -d)
  cp "$(readlink -f "$(command -v deno)")" "$dir/deno"
  tar -C "$dir" -cf - deno | podman import -q - "$DENO_IMAGE" >/dev/null
  rm -rf "$dir"
  echo "container base: $DENO_IMAGE"
fi
