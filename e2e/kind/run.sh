#!/usr/bin/env bash
# `make e2e-kind`: the e2e suite on a kind cluster, the way a user's laptop or a hosted CI runs it.
#   1. builds kind (sigs.k8s.io/kind, KIND_VERSION) and Helm from the Go module proxy (cached);
#   2. creates the cluster `mlendpoints-e2e` from KIND_NODE_IMAGE (default: the node image kind's
#      release names, which needs a registry; see docs/development.md for a locally built one);
#   3. runs the e2e suite against it (USE_EXISTING_CLUSTER=1): the fixtures build the project's
#      images with the ambient docker and `kind load docker-image` them, install the operator with
#      the chart, and reach the host's MLflow and S3 servers at the kind network's gateway;
#   4. deletes the cluster, whatever happened (KEEP_KIND_CLUSTER=1 keeps it).
# Docker: the ambient one (DOCKER_HOST or /var/run/docker.sock); with none running, the local
# cluster's private dockerd (`cluster.sh docker`). PYTEST_ARGS passes through.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../localcluster/versions.sh
. "$ROOT/e2e/localcluster/versions.sh"
NAME=${KIND_CLUSTER_NAME:-mlendpoints-e2e}
PY=${PY:-$ROOT/.venv/bin/python}
log() { echo "e2e-kind: $*" >&2; }

bash "$ROOT/e2e/localcluster/build-k8s.sh" kind helm >/dev/null
KIND="$KIND_BIN/kind"
export PATH="$HELM_BIN:$PATH"
# kubectl of the supported version, when the local cluster built it.
[ -x "$K8S_BIN/kubectl" ] && export PATH="$K8S_BIN:$PATH"

if ! docker info >/dev/null 2>&1; then
  log "no docker daemon at ${DOCKER_HOST:-the default socket}: starting the local cluster's private dockerd"
  bash "$ROOT/e2e/localcluster/cluster.sh" docker
  eval "$(bash "$ROOT/e2e/localcluster/cluster.sh" env | grep DOCKER_HOST)"
  export DOCKER_HOST
fi

KUBECONFIG_FILE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}/kind-$NAME.kubeconfig
cleanup() {
  [ "${KEEP_KIND_CLUSTER:-}" = 1 ] && { log "kept: kind delete cluster --name $NAME"; return; }
  "$KIND" delete cluster --name "$NAME" --kubeconfig "$KUBECONFIG_FILE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

args=(create cluster --name "$NAME" --kubeconfig "$KUBECONFIG_FILE" --wait 180s)
[ -n "${KIND_NODE_IMAGE:-}" ] && args+=(--image "$KIND_NODE_IMAGE")
log "creating $NAME (${KIND_NODE_IMAGE:-the default node image of kind $KIND_VERSION})"
"$KIND" delete cluster --name "$NAME" --kubeconfig "$KUBECONFIG_FILE" >/dev/null 2>&1 || true
"$KIND" "${args[@]}"

# Pods reach the host's test servers (MLflow, S3) at the gateway of kind's docker network.
gateway=$(docker network inspect kind -f '{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}} {{end}}{{end}}' | tr ' ' '\n' | grep -m1 -E '^[0-9.]+$')
log "host address for pods: $gateway"

cd "$ROOT"
USE_EXISTING_CLUSTER=1 KUBECONFIG="$KUBECONFIG_FILE" MLENDPOINTS_HOST_ADDRESS="$gateway" \
  MLENDPOINTS_LOAD_IMAGE="$KIND load docker-image --name $NAME" \
  "$PY" -m pytest -ra ${PYTEST_ARGS:-} e2e
