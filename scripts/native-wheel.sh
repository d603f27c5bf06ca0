#!/usr/bin/env bash
# Builds the model server's compiled codec (images/serving/native: Rust, PyO3, built by maturin)
# into a wheel, once per content of its sources, and prints the wheel's path. setup.sh installs
# it in the virtualenv, images/build.sh in the serving image; the server falls back to its
# Python decoders where it is not installed. Needs cargo (rustup); crates come from crates.io,
# at the versions Cargo.lock pins.
#
# Usage: native-wheel.sh [PYTHON]   (default: the project's .venv)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-$ROOT/.venv/bin/python}
CACHE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}
SRC=$ROOT/images/serving/native
PATH=$PATH:$HOME/.cargo/bin  # where rustup puts cargo, for shells that did not source its profile
mkdir -p "$CACHE/native"
exec 9>"$CACHE/native/.lock"
flock 9
hash=$(cd "$SRC" && find Cargo.toml Cargo.lock pyproject.toml mlendpoints_native.pyi src -type f -print0 \
         | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
out=$CACHE/native/$hash
if ! compgen -G "$out/mlendpoints_native-*.whl" >/dev/null; then
  command -v cargo >/dev/null || {
    echo "native-wheel: cargo is needed to build images/serving/native (install Rust with rustup)" >&2
    exit 1
  }
  echo "native-wheel: building images/serving/native ($hash)" >&2
  rm -rf "$out.tmp"
  # --locked: the crates Cargo.lock pins. The build's maturin is pinned by constraints.txt.
  PIP_CONSTRAINT=$ROOT/constraints.txt MATURIN_PEP517_ARGS=--locked CARGO_TARGET_DIR=$CACHE/native/target \
    "$PY" -m pip wheel -q --no-deps --disable-pip-version-check -w "$out.tmp" "$SRC" >&2
  mv "$out.tmp" "$out"
fi
compgen -G "$out/mlendpoints_native-*.whl"
