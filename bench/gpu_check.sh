#!/usr/bin/env bash
# The GPU device check of issue 21 in one call, on a machine with a GPU (the lent H200):
#
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# What it does is bench/gpu_check.py's docstring: mlendpoints-serve --device auto with batching on,
# predictions against mlflow.pytorch within float tolerance, req/s and p99 at c=64 with 1-row
# requests and rows/s with 1,000-row requests, GPU against CPU in the same run, and mlendpoints-batch
# over 100 CSV files on the GPU. Results: $OUT/gpu_check.json, $OUT/gpu_check.md (the table for
# docs/benchmarks.md), $OUT/logs.txt.
#
# Python and torch: the machine's own `python3` with CUDA torch. The CUDA torch wheels (2.8 GB with
# the nvidia-* ones) are far over what travels to that machine (64 MiB), and it reaches no package
# index; its image has torch (2.11+cu130 when last seen), numpy, pandas, pyarrow, scikit-learn. What
# it lacks (pydantic, orjson, httptools, uvicorn, mlflow-skinny and their dependencies, ~20 MB) and
# the project's own wheel travel in .whl/, made here beforehand by bench/gpu_wheels.sh. Without
# torch the check stops at once, saying so. Here (no GPU), `bash bench/gpu_check.sh` runs the same
# steps on the CPU with the project's .venv, to try the script: its report then says it is no GPU
# measurement.
#
# Env: GPU_CHECK_SECONDS (per load run, default 8), PYTHON (default: .venv/bin/python if it has
# torch, else python3), GPU_WHEELS (default .whl).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
started=$SECONDS
OUT=${OUT:-$ROOT/build/gpu-check}
mkdir -p "$OUT"
: >"$OUT/setup.txt"
WHEELS=${GPU_WHEELS:-.whl}
say() { echo "gpu_check.sh: $*" | tee -a "$OUT/setup.txt" >&2; }

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch, mlendpoints_serving' 2>/dev/null; then
    PYTHON=$ROOT/.venv/bin/python
  else
    PYTHON=$(command -v python3)
  fi
fi
say "python: $PYTHON ($("$PYTHON" --version 2>&1))"
if ! "$PYTHON" -c 'import torch' 2>>"$OUT/setup.txt"; then
  say "FAILED: $PYTHON has no torch. This check uses the machine's own CUDA torch (its wheels are over"
  say "what travels to the device machine); run it where python3 has torch with CUDA."
  exit 2
fi
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$OUT/setup.txt" >&2
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
  2>&1 | tee -a "$OUT/setup.txt" >&2 || true

# The project and what the machine's Python lacks, from the carried wheels, into their own folder.
if ! "$PYTHON" -c 'import mlendpoints_serving.server.app, mlflow.pytorch, pydantic_settings' 2>/dev/null; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    say "FAILED: $PYTHON lacks the project's dependencies and $WHEELS/ has no wheels:"
    say "run 'bash bench/gpu_wheels.sh' on the developer machine first and carry $WHEELS"
    exit 2
  fi
  SITE=/tmp/mlendpoints-gpu-site
  rm -rf "$SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$SITE" "$WHEELS"/*.whl 2>&1 | tail -n 20 | tee -a "$OUT/setup.txt" >&2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
  say "installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
fi
if ! "$PYTHON" -c 'import mlendpoints_serving.server.app, mlendpoints_serving.batch.cli, mlflow.pytorch' \
    2>>"$OUT/setup.txt"; then
  say "FAILED: the project does not import with these packages (the error is above in setup.txt)"
  tail -n 15 "$OUT/setup.txt" >&2
  exit 2
fi
# The console scripts of the project's wheel (or of the venv) run with this Python.
export PATH="$(dirname "$PYTHON"):$PATH"
command -v mlendpoints-serve >/dev/null || { say "FAILED: no mlendpoints-serve on PATH"; exit 2; }
say "set up in $((SECONDS - started)) s"

# The whole check stays within 8 minutes (a device call allows 10).
timeout 480 "$PYTHON" -m bench.gpu_check "$OUT" --seconds "${GPU_CHECK_SECONDS:-8}"
say "done in $((SECONDS - started)) s; results in $OUT"
