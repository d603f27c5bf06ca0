#!/usr/bin/env bash
# The project's Helm CLI: `scripts/helm.sh ARGS...` runs helm (helm.sh/helm/v3 at
# HELM_VERSION, e2e/localcluster/versions.sh), building it from the Go module
# proxy into $MLENDPOINTS_CACHE/tools/helm-<version>/ on first use. Tests and
# docs call this rather than whatever helm is on PATH, so every Helm step runs
# the same, known version.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../e2e/localcluster/versions.sh
. "$ROOT/e2e/localcluster/versions.sh"
[ -x "$HELM_BIN/helm" ] || bash "$ROOT/e2e/localcluster/build-k8s.sh" helm >&2
exec "$HELM_BIN/helm" "$@"
