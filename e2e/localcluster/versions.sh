# Versions of the local cluster's components, sourced by build-k8s.sh and
# cluster.sh. K8S_VERSION picks a Kubernetes minor (default: the newest
# supported); every component is built from the Go module proxy and cached
# under $MLENDPOINTS_CACHE/k8s/<version>.
K8S_VERSION=${K8S_VERSION:-1.37}
case $K8S_VERSION in
  *.*.*) K8S_FULL=$K8S_VERSION ;;
  1.37) K8S_FULL=1.37.2 ;;
  1.36) K8S_FULL=1.36.3 ;;
  1.35) K8S_FULL=1.35.4 ;;
  1.34) K8S_FULL=1.34.4 ;;
  1.33) K8S_FULL=1.33.13 ;;
  1.32) K8S_FULL=1.32.13 ;;
  1.31) K8S_FULL=1.31.0 ;;  # the one 1.31 patch whose staging modules (kube-proxy, ...) the proxy serves
  *) echo "K8S_VERSION=$K8S_VERSION: choose a minor from 1.31 to 1.37" >&2; exit 2 ;;
esac
K8S_MINOR=${K8S_FULL%.*}
# The staging modules (k8s.io/api, client-go, ...) are published as v0.<minor>.<patch>.
K8S_STAGING=v0.${K8S_FULL#1.}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
# The Helm CLI that installs the chart (charts/mlendpoints) in tests and docs.
HELM_VERSION=${HELM_VERSION:-v3.22.0}
# metrics-server (sigs.k8s.io/metrics-server): the resource metrics API
# (metrics.k8s.io) behind `kubectl top` and the HPA's CPU targets.
METRICS_SERVER_VERSION=${METRICS_SERVER_VERSION:-v0.8.0}
# kind (sigs.k8s.io/kind), for `make e2e-kind`.
KIND_VERSION=${KIND_VERSION:-v0.33.0}

# Where each is cached (build-k8s.sh builds what is missing).
CACHE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}
K8S_BIN=$CACHE/k8s/$K8S_FULL
ETCD_BIN=$CACHE/tools/etcd-$ETCD_VERSION
CONTAINERD_BIN=$CACHE/tools/containerd-$CONTAINERD_VERSION
COREDNS_BIN=$CACHE/tools/coredns-$COREDNS_VERSION
HELM_BIN=$CACHE/tools/helm-$HELM_VERSION
METRICS_SERVER_BIN=$CACHE/tools/metrics-server-$METRICS_SERVER_VERSION
KIND_BIN=$CACHE/tools/kind-$KIND_VERSION
