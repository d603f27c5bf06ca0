#!/usr/bin/env bash
# Set-up on a fresh machine: the Debian packages the tests and benchmarks use,
# and a virtualenv with the project and its test extras. Idempotent.
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."

# Rust (cargo, for images/serving/native) comes from rustup, not from Debian: bookworm's is too old for PyO3.
DEB_PKGS=(docker.io containernetworking-plugins runc rsync debootstrap iptables conntrack wrk nginx-light
          curl jq openssl gcc libc6-dev binutils iproute2 procps)
missing=()
for p in "${DEB_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# npm installs Azurite (scripts/azurite.sh) for the Azure Blob tests; a Node.js already on PATH will do.
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: not root; cluster/benchmark layers need: ${missing[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip wheel setuptools
"$VENV/bin/pip" install -q -c constraints.txt -e '.[test]'
# The model server's compiled codec (images/serving/native), rebuilt when its sources change; forced,
# since a rebuilt wheel keeps its version.
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$(bash scripts/native-wheel.sh "$VENV/bin/python")"
bash scripts/azmlinfsrv-venv.sh  # Azure's own scoring server, for the side-by-side tests
echo "setup: done ($VENV)"
