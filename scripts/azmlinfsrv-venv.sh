#!/usr/bin/env bash
# A virtualenv holding Azure ML's inference server (azureml-inference-server-http) and its pins
# (tests/azmlinfsrv/requirements.txt), apart from the project's: the side-by-side tests run the same
# scoring scripts under it and under mlendpoints-serve. Idempotent: reinstalls only when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-azmlinfsrv}
REQS=tests/azmlinfsrv/requirements.txt
stamp="$VENV/.installed-$(sha256sum "$REQS" | cut -c1-16)"
[ -e "$stamp" ] && exit 0
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r "$REQS"
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "setup: done ($VENV: azmlinfsrv)"
