#!/usr/bin/env bash
# Builds the project's images from images/*/Dockerfile:
#   mlendpoints/serving:dev   (data plane)
#   mlendpoints/operator:dev  (control plane)
#   mlendpoints/serving:dev-cuda  (VARIANT=cuda: the data plane with PyTorch for CUDA)
#
# Wheels are made on the host (`pip wheel` of the project with its extras,
# pinned by constraints.txt) and installed in the image with --no-index: the
# build containers never reach a package index.
#
# Docker: by default the local cluster's dockerd (e2e/localcluster/cluster.sh),
# FROM mlendpoints/base:bookworm (debootstrap, built on first use), and each
# tag is then copied into the cluster's containerd (`cluster.sh load`). With
# USE_EXISTING_CLUSTER=1 the ambient docker (DOCKER_HOST) is used, FROM the
# public Python image; load the tags into your cluster yourself (`kind load
# docker-image`), or set MLENDPOINTS_LOAD_IMAGE, e.g. "kind load docker-image".
#
# An image is rebuilt only when the content hash of what goes into it (its
# sources, pyproject.toml, constraints.txt, Dockerfile, this script, the base
# image ID) differs from the io.mlendpoints.source-hash label of the existing tag.
#
# VARIANT=cuda builds the serving image FROM the same Python base as the CPU one,
# with `mlendpoints[serving,torch]`: PyPI's torch wheel for Linux x86_64 is the CUDA
# build and brings the CUDA runtime libraries as nvidia-* wheels, so no CUDA base
# image is needed; the driver comes from the node (NVIDIA container toolkit / device
# plugin). The CPU image stays free of torch.
#
# Env: TAG (default dev), BASE_IMAGE, VARIANT=cpu|cuda (serving image only),
#      WHEEL_PYTHON_VERSION (wheels for another interpreter than the host's, for a
#      BASE_IMAGE with another Python), IMAGES="serving operator".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TAG=${TAG:-dev}
VARIANT=${VARIANT:-cpu}
# The variant is the serving image's: VARIANT=cuda alone builds only that one.
if [ "$VARIANT" = cuda ]; then IMAGES=${IMAGES:-serving}; else IMAGES=${IMAGES:-serving operator}; fi
PY=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}
mkdir -p "$CACHE"
# One build at a time (concurrent test sessions share the wheelhouse paths).
exec 8>"$CACHE/images.lock"
flock 8
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
[ -x "$PY" ] || PY=python3

LOCAL_DOCKER=0
if [ "${USE_EXISTING_CLUSTER:-}" = 1 ]; then
  default_base=python:3.11-slim-bookworm
else
  LOCAL_DOCKER=1
  eval "$(bash e2e/localcluster/cluster.sh env)"
  MLENDPOINTS_LOAD_IMAGE=${MLENDPOINTS_LOAD_IMAGE:-bash e2e/localcluster/cluster.sh load}
  bash e2e/localcluster/cluster.sh docker
  default_base=mlendpoints/base:bookworm
  [ -n "${BASE_IMAGE:-}" ] || bash e2e/localcluster/base-image.sh >&2
fi
BASE_IMAGE=${BASE_IMAGE:-$default_base}
case $VARIANT in
  cpu|cuda) ;;
  *) echo "images: VARIANT must be cpu or cuda, not $VARIANT" >&2; exit 2 ;;
esac
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || docker pull "$BASE_IMAGE" >&2
base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")

# sources_hash PATH...: hash of file names and contents (bytecode excluded).
sources_hash() {
  find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*/wheelhouse/*' ! -path '*/native/target/*' -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

build_image() { # build_image NAME EXTRAS SOURCES...
  local name=$1 extras=$2; shift 2
  local image="mlendpoints/$name:$TAG" ctx="images/$name" hash current t0=$SECONDS variant=cpu
  [ "$name" = serving ] && variant=$VARIANT
  [ "$variant" = cuda ] && image="mlendpoints/$name:$TAG-cuda"
  hash=$( (sources_hash "$@" pyproject.toml constraints.txt "images/$name/Dockerfile" images/build.sh;
           echo "$base_id $variant ${WHEEL_PYTHON_VERSION:-host}") | sha256sum | cut -c1-16)
  current=$(docker image inspect -f '{{index .Config.Labels "io.mlendpoints.source-hash"}}' "$image" 2>/dev/null || true)
  if [ "$current" = "$hash" ]; then
    echo "images: $image up to date ($hash)" >&2
  else
    echo "images: building $image ($hash) FROM $BASE_IMAGE" >&2
    rm -rf "$ctx/wheelhouse"
    local wh=$ctx/wheelhouse/deps
    if [ -n "${WHEEL_PYTHON_VERSION:-}" ]; then
      # Wheels for another interpreter: binary wheels only; the project's own
      # wheel (pure Python) is built apart, without its dependencies.
      "$PY" -m pip wheel -q --no-deps -w "$wh" "$ROOT" 2>"$LOG" || { tail -n 30 "$LOG" >&2; exit 1; }
      "$PY" -m pip download -q --only-binary=:all: --python-version "$WHEEL_PYTHON_VERSION" \
        --platform manylinux2014_x86_64 -c constraints.txt -d "$wh" "$(ls "$wh"/mlendpoints-*.whl)[$extras]" \
        2>"$LOG" || { tail -n 30 "$LOG" >&2; exit 1; }
    else
      "$PY" -m pip wheel -q --disable-pip-version-check -c constraints.txt -w "$wh" "$ROOT[$extras]" \
        2>"$LOG" || { tail -n 30 "$LOG" >&2; exit 1; }
    fi
    # The project's wheel apart from its dependencies, so that the (big)
    # dependency layers stay cached across source changes.
    mkdir -p "$ctx/wheelhouse/project"
    mv "$wh"/mlendpoints-*.whl "$ctx/wheelhouse/project/"
    # The serving image's compiled codec (abi3: any CPython from 3.11), beside the project's wheel.
    if [ "$name" = serving ]; then cp "$(bash scripts/native-wheel.sh "$PY")" "$ctx/wheelhouse/project/"; fi
    local args=(-f "images/$name/Dockerfile" --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VARIANT="$VARIANT")
    local target=()
    [ "$name" = serving ] && target=(--target "$VARIANT")
    # The dependency stage is tagged, so that pruning dangling images keeps its cache.
    docker build -q "${args[@]}" --target deps -t "${image%%:*}-deps:${image#*:}" "$ctx" >/dev/null 2>"$LOG" \
      && docker build -q "${args[@]}" "${target[@]}" -t "$image" --label io.mlendpoints.source-hash="$hash" "$ctx" \
        >/dev/null 2>"$LOG" || { tail -n 30 "$LOG" >&2; exit 1; }
    rm -rf "$ctx/wheelhouse"
    # The replaced image is left dangling; on the local cluster's private
    # dockerd nothing else owns dangling images.
    [ "$LOCAL_DOCKER" = 1 ] && docker image prune -f >/dev/null
    echo "images: built $image in $((SECONDS - t0))s" >&2
  fi
  if [ -n "${MLENDPOINTS_LOAD_IMAGE:-}" ]; then $MLENDPOINTS_LOAD_IMAGE "$image" >&2; fi
  echo "$image"
}

for name in $IMAGES; do
  case $name in
    serving)
      if [ "$VARIANT" = cuda ]; then build_image serving serving,torch images/serving
      else build_image serving serving images/serving; fi ;;
    operator) build_image operator operator images/serving operator ;;
    *) echo "images: unknown image $name" >&2; exit 2 ;;
  esac
done
