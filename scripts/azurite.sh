#!/usr/bin/env bash
# Installs Azurite (the Azure Storage emulator, from npm) into a cache once and prints
# the path of its blob-service binary. Used by the tests that talk to Azure Blob Storage.
# 3.35.0 is the newest release that runs on Node 20 (Debian bookworm's); later ones need Node >= 21.
set -euo pipefail
VERSION=3.35.0
PREFIX=${MLENDPOINTS_AZURITE_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/mlendpoints/azurite-$VERSION}
BIN="$PREFIX/node_modules/.bin/azurite-blob"
if [ ! -x "$BIN" ]; then
  command -v npm >/dev/null || { echo "azurite.sh: npm is needed to install azurite (apt-get install npm)" >&2; exit 1; }
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2
fi
echo "$BIN"
