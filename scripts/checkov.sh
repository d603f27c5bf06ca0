#!/usr/bin/env bash
# The project's checkov (the chart's security scan): `scripts/checkov.sh ARGS...` runs checkov
# CHECKOV_VERSION from its own virtual environment under $MLENDPOINTS_CACHE, made from PyPI on
# first use. It lives apart from the project's venv because its many pins (boto3, networkx, ...)
# are its own and would fight constraints.txt; only the scanner's version is pinned here.
# Offline: nothing is sent to or fetched from Prisma Cloud (--skip-download, no API key).
set -euo pipefail
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
CACHE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}
VENV=$CACHE/tools/checkov-$CHECKOV_VERSION
if [ ! -f "$VENV/.complete" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2
  touch "$VENV/.complete"  # an interrupted install is redone, never half-used
fi
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
exec "$VENV/bin/checkov" --skip-download "$@"
