#!/usr/bin/env bash
# Wheels for bench/gpu_check.sh on the lent GPU machine, made here (which reaches PyPI) into .whl/
# (ignored by git; a device call carries it: carry=[".whl"]).
#
# That machine's python3 (3.12, with CUDA torch, numpy, pandas, pyarrow, scikit-learn and more;
# /work/.library/device/KINDS.md lists them) reaches no package index. This downloads, for CPython
# 3.12 on manylinux x86_64 and pinned by constraints.txt, what the model server, the batch driver and
# mlflow.pytorch need, less the compiled packages that machine already has (two builds of numpy or
# pandas side by side would break), and builds the project's own wheel. About 20 MB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
DEST=${GPU_WHEELS:-.whl}
PYVER=${GPU_PYTHON_VERSION:-3.12}
rm -rf "$DEST"
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$PYVER" \
  --implementation cp "${platforms[@]}" -c constraints.txt -d "$DEST" \
  pydantic pydantic-settings orjson httptools uvicorn mlflow-skinny pyyaml prometheus-client uvloop \
  numpy pandas fsspec pyarrow threadpoolctl
# Compiled packages the GPU machine's image already has, built against its numpy.
for name in numpy pandas pyarrow pyyaml PyYAML uvloop charset_normalizer; do
  rm -f "$DEST/$name"-*.whl
done
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$DEST" "$ROOT"
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST" >&2
