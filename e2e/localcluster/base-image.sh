#!/usr/bin/env bash
# The local base image `mlendpoints/base:bookworm`: a debootstrap'd Debian
# bookworm (minbase + python3, python3-venv, ca-certificates), imported into
# the local cluster's dockerd. No registry needed. Cached twice: the image
# itself, and the rootfs tarball (re-imported if the image store is wiped).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}
TAG=mlendpoints/base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL=$CACHE/base/bookworm-minbase.tar

eval "$(bash "$HERE/cluster.sh" env)"
bash "$HERE/cluster.sh" docker
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "base image $TAG cached"; exit 0; fi

if [ ! -f "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap missing: run scripts/setup.sh" >&2; exit 1; }
  rootfs=$(mktemp -d "$CACHE/base-rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$(dirname "$TARBALL")"
  echo "debootstrap bookworm into $rootfs (about 70 s)" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$CACHE/base/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE/base/debootstrap.log" >&2; exit 1; }
  # Docs, man pages, locales and package lists are dead weight in an image.
  rm -rf "$rootfs"/usr/share/{doc,man,info,locale}/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
  tar -C "$rootfs" -cf "$TARBALL.tmp" --numeric-owner . && mv "$TARBALL.tmp" "$TARBALL"
fi
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$TARBALL" "$TAG" >/dev/null
echo "base image $TAG imported from $TARBALL"
