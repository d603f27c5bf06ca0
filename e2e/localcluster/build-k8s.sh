#!/usr/bin/env bash
# Builds the local cluster's components from the Go module proxy, each cached
# by version under $MLENDPOINTS_CACHE (default ~/.cache/mlendpoints):
#   k8s/<version>/      kube-apiserver, kube-controller-manager, kube-scheduler,
#                       kubelet, kube-proxy, kubectl (k8s.io/kubernetes at K8S_VERSION)
#   tools/etcd-<v>/     etcd (go.etcd.io/etcd/server/v3)
#   tools/containerd-<v>/ containerd, containerd-shim-runc-v2, ctr
#   tools/coredns-<v>/  coredns with the plugins a cluster DNS needs
#   tools/helm-<v>/     helm (helm.sh/helm/v3), which installs the chart
#   tools/metrics-server-<v>/ metrics-server (sigs.k8s.io/metrics-server): kubectl top, HPA
#   tools/kind-<v>/     kind (sigs.k8s.io/kind), for `make e2e-kind` only (named, not default)
# runc and the CNI plugins come from Debian (scripts/setup.sh). Idempotent:
# prints the cached paths and does nothing else when everything is built.
# Arguments name components to build only those (k8s etcd containerd coredns
# helm metrics-server); none: all of them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$HERE/versions.sh"
SRC=$CACHE/gobuild
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

log() { echo "build-k8s: $*" >&2; }

# A Go new enough for the module (k8s 1.37 declares go 1.26); Debian's
# golang-go is older, so prefer the toolchain in /usr/local/go.
pick_go() {
  local g
  for g in "${GO:-}" /usr/local/go/bin/go "$(command -v go || true)"; do
    [ -n "$g" ] && [ -x "$g" ] || continue
    if "$g" version | grep -Eq 'go1\.(2[2-9]|[3-9][0-9])'; then echo "$g"; return 0; fi
  done
  log "needs Go >= 1.22 (k8s $K8S_FULL may need newer); found: $(go version 2>&1 || echo none)"; exit 1
}
GO_BIN=$(pick_go)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOCACHE=$CACHE/gocache
export GOMODCACHE=${GOMODCACHE:-$CACHE/gomod}

# wrapper DIR GOMOD_BODY: a throw-away module that requires what is built.
wrapper() {
  mkdir -p "$1"
  printf 'module mlendpoints.local/build\n\ngo 1.22\n\n%s\n' "$2" >"$1/go.mod"
  : >>"$1/go.sum"
}

# The module's source folder (downloaded on first use).
k8s_module_dir() {
  (cd "$1" && "$GO_BIN" mod download -json "k8s.io/kubernetes@v$K8S_FULL" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
}

build_k8s() {
  local have=1 c dir=$SRC/kubernetes-$K8S_FULL
  for c in "${K8S_CMDS[@]}"; do [ -x "$K8S_BIN/$c" ] || have=0; done
  if [ $have = 1 ]; then
    # The pause container's source, built with gcc by cluster.sh.
    [ -f "$K8S_BIN/pause.c" ] || cp "$(k8s_module_dir "$dir")/build/pause/linux/pause.c" "$K8S_BIN/"
    return 0
  fi
  log "Kubernetes v$K8S_FULL (cold build: about 15 min on 2 cores)"
  local moddir staging replaces="" pkgs=() m
  mkdir -p "$dir"
  moddir=$(k8s_module_dir "$dir")
  # k8s.io/kubernetes replaces its staging modules with ./staging/..., which a
  # module download lacks: replace each with its published v0.x release.
  staging=$(sed -n '/^replace (/,/^)/p' "$moddir/go.mod" | awk '$2 == "=>" && $3 ~ /^\.\/staging/ {print $1}' | grep -v '^k8s.io/sample-')
  for m in $staging; do replaces+="	$m => $m $K8S_STAGING"$'\n'; done
  wrapper "$dir" "require k8s.io/kubernetes v$K8S_FULL
replace (
$replaces)"
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  local v=k8s.io/component-base/version minor=${K8S_MINOR#1.}
  local ld="-s -w -X $v.gitVersion=v$K8S_FULL -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  ld+=" -X $v.buildDate=1970-01-01T00:00:00Z -X $v.gitCommit=module-v$K8S_FULL"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_FULL -X k8s.io/client-go/pkg/version.gitMajor=1"
  ld+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$K8S_BIN.tmp"
  (cd "$dir" && "$GO_BIN" build -trimpath -ldflags "$ld" -o "$K8S_BIN.tmp/" "${pkgs[@]}")
  cp "$moddir/build/pause/linux/pause.c" "$K8S_BIN.tmp/"
  rm -rf "$K8S_BIN" && mv "$K8S_BIN.tmp" "$K8S_BIN"
}

build_etcd() {
  [ -x "$ETCD_BIN/etcd" ] && return 0
  log "etcd $ETCD_VERSION"
  local dir=$SRC/etcd-$ETCD_VERSION
  wrapper "$dir" "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  mkdir -p "$ETCD_BIN"
  (cd "$dir" && "$GO_BIN" build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_containerd() {
  [ -x "$CONTAINERD_BIN/containerd" ] && [ -x "$CONTAINERD_BIN/containerd-shim-runc-v2" ] && return 0
  log "containerd $CONTAINERD_VERSION"
  local dir=$SRC/containerd-$CONTAINERD_VERSION p=github.com/containerd/containerd/v2
  wrapper "$dir" "require $p $CONTAINERD_VERSION"
  mkdir -p "$CONTAINERD_BIN.tmp"
  # No cgo: leave out the btrfs snapshotter and its C headers; overlayfs is used.
  (cd "$dir" && "$GO_BIN" build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X $p/version.Version=$CONTAINERD_VERSION" \
    -o "$CONTAINERD_BIN.tmp/" "$p/cmd/containerd" "$p/cmd/containerd-shim-runc-v2" "$p/cmd/ctr")
  rm -rf "$CONTAINERD_BIN" && mv "$CONTAINERD_BIN.tmp" "$CONTAINERD_BIN"
}

# CoreDNS with only the plugins a cluster DNS uses (the full build compiles
# every cloud SDK): the same directive order as CoreDNS's plugin.cfg.
build_coredns() {
  [ -x "$COREDNS_BIN/coredns" ] && return 0
  log "coredns $COREDNS_VERSION"
  local dir=$SRC/coredns-$COREDNS_VERSION p=github.com/coredns/coredns
  wrapper "$dir" "require $p $COREDNS_VERSION"
  cat >"$dir/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{
		"reload", "bind", "ready", "health", "errors", "log", "loadbalance", "cache",
		"kubernetes", "loop", "forward",
	}
}

func main() { coremain.Run() }
GO
  mkdir -p "$COREDNS_BIN"
  (cd "$dir" && "$GO_BIN" build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN/coredns" .)
}

# Helm's own Makefile stamps its version, and the Kubernetes version it assumes
# without a cluster (helm template/lint check the chart's kubeVersion against
# it), from the client-go it is built with: v0.37.x -> 1.37.
build_helm() {
  [ -x "$HELM_BIN/helm" ] && return 0
  log "helm $HELM_VERSION"
  local dir=$SRC/helm-$HELM_VERSION p=helm.sh/helm/v3 moddir cg major minor ld
  wrapper "$dir" "require $p $HELM_VERSION"
  moddir=$(cd "$dir" && "$GO_BIN" mod download -json "$p@$HELM_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cg=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$moddir/go.mod")
  cg=${cg#v}; major=$((${cg%%.*} + 1)); minor=$(echo "$cg" | cut -d. -f2)
  ld="-s -w -X $p/internal/version.version=$HELM_VERSION -X $p/internal/version.gitTreeState=clean"
  ld+=" -X $p/pkg/lint/rules.k8sVersionMajor=$major -X $p/pkg/lint/rules.k8sVersionMinor=$minor"
  ld+=" -X $p/pkg/chartutil.k8sVersionMajor=$major -X $p/pkg/chartutil.k8sVersionMinor=$minor"
  mkdir -p "$HELM_BIN.tmp"
  (cd "$dir" && "$GO_BIN" build -trimpath -ldflags "$ld" -o "$HELM_BIN.tmp/helm" "$p/cmd/helm")
  rm -rf "$HELM_BIN" && mv "$HELM_BIN.tmp" "$HELM_BIN"
}

# metrics-server, the metrics.k8s.io API (kubectl top, the HPA's resource
# targets); its version package is stamped as its Makefile does.
build_metrics_server() {
  [ -x "$METRICS_SERVER_BIN/metrics-server" ] && return 0
  log "metrics-server $METRICS_SERVER_VERSION"
  local dir=$SRC/metrics-server-$METRICS_SERVER_VERSION p=sigs.k8s.io/metrics-server v=k8s.io/client-go/pkg/version
  wrapper "$dir" "require $p $METRICS_SERVER_VERSION"
  rm -rf "$METRICS_SERVER_BIN.tmp" && mkdir -p "$METRICS_SERVER_BIN.tmp"
  (cd "$dir" && "$GO_BIN" build -trimpath \
    -ldflags "-s -w -X $v.gitVersion=$METRICS_SERVER_VERSION -X $v.gitCommit=module-$METRICS_SERVER_VERSION -X $v.buildDate=1970-01-01T00:00:00Z" \
    -o "$METRICS_SERVER_BIN.tmp/metrics-server" "$p/cmd/metrics-server")
  rm -rf "$METRICS_SERVER_BIN" && mv "$METRICS_SERVER_BIN.tmp" "$METRICS_SERVER_BIN"
}

# kind, for `make e2e-kind` only (not part of the default set).
build_kind() {
  [ -x "$KIND_BIN/kind" ] && return 0
  log "kind $KIND_VERSION"
  local dir=$SRC/kind-$KIND_VERSION
  wrapper "$dir" "require sigs.k8s.io/kind $KIND_VERSION"
  rm -rf "$KIND_BIN.tmp" && mkdir -p "$KIND_BIN.tmp"
  (cd "$dir" && "$GO_BIN" build -trimpath -ldflags "-s -w" -o "$KIND_BIN.tmp/kind" sigs.k8s.io/kind)
  rm -rf "$KIND_BIN" && mv "$KIND_BIN.tmp" "$KIND_BIN"
}

t0=$SECONDS
[ $# -gt 0 ] || set -- k8s etcd containerd coredns helm metrics-server
for c in "$@"; do
  case $c in
    k8s|etcd|containerd|coredns|helm|kind) "build_$c" ;;
    metrics-server) build_metrics_server ;;
    *) log "unknown component $c (k8s etcd containerd coredns helm metrics-server kind)"; exit 2 ;;
  esac
done
[ $((SECONDS - t0)) -gt 1 ] && log "built in $((SECONDS - t0))s"
echo "K8S_BIN=$K8S_BIN ETCD_BIN=$ETCD_BIN CONTAINERD_BIN=$CONTAINERD_BIN COREDNS_BIN=$COREDNS_BIN HELM_BIN=$HELM_BIN METRICS_SERVER_BIN=$METRICS_SERVER_BIN"
