#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy from Debian's `kubernetes` source package (1.20.2) into
# $CACHE/bin. Idempotent: does nothing when the binaries are already cached.
set -euo pipefail
CACHE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}
BIN=$CACHE/bin
WHAT=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

have_all() { for b in "${WHAT[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if have_all && [ -f "$BIN/pause.c" ]; then echo "k8s binaries cached in $BIN"; exit 0; fi

export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs '^Types: deb deb-src\|^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  # deb-src for bookworm, same mirror as the binary packages.
  cat > /etc/apt/sources.list.d/mlendpoints-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi
apt-get install -y -qq golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev >/dev/null

SRCDIR=$CACHE/src
mkdir -p "$SRCDIR" "$BIN"
cd "$SRCDIR"
if ! ls -d kubernetes-1.20*/ >/dev/null 2>&1; then
  apt-get source -qq kubernetes >/dev/null
fi
KSRC=$(ls -d "$SRCDIR"/kubernetes-1.20*/ | head -1)
KSRC=${KSRC%/}

# GOPATH layout: k8s.io/kubernetes -> source tree.
GOPATH_DIR=$CACHE/gopath
mkdir -p "$GOPATH_DIR/src/k8s.io"
ln -sfn "$KSRC" "$GOPATH_DIR/src/k8s.io/kubernetes"

# With Go >= 1.18 the vendored reflect2 v1.0.1 makes the API server SIGSEGV
# on the first custom-resource write; Debian's 1.0.2 source fixes it.
R2=/usr/share/gocode/src/github.com/modern-go/reflect2
if [ -d "$R2" ] && ! grep -qs 'mlendpoints: reflect2 1.0.2' "$KSRC/vendor/github.com/modern-go/reflect2/.patched" 2>/dev/null; then
  rm -rf "$KSRC/vendor/github.com/modern-go/reflect2"
  cp -r "$R2" "$KSRC/vendor/github.com/modern-go/reflect2"
  echo 'mlendpoints: reflect2 1.0.2' > "$KSRC/vendor/github.com/modern-go/reflect2/.patched"
fi

cd "$GOPATH_DIR/src/k8s.io/kubernetes"
export GOPATH=$GOPATH_DIR GO111MODULE=off CGO_ENABLED=0 GOFLAGS=-mod=vendor
export GOCACHE=$CACHE/gocache
# hack/lib builds through _output; KUBE_GIT_VERSION avoids needing a git repo.
export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean
if ! make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy" >"$CACHE/build.log" 2>&1; then
  # The Makefile route needs a module-less GOPATH build; fall back to go build directly.
  echo "make failed, trying go build directly (see $CACHE/build.log)" >&2
  export GO111MODULE=on GOFLAGS=-mod=vendor
  for b in "${WHAT[@]}"; do
    go build -o "_output/local/bin/linux/amd64/$b" "./cmd/$b" >>"$CACHE/build.log" 2>&1
  done
fi
for b in "${WHAT[@]}"; do
  f=$(ls _output/local/bin/linux/*/"$b" _output/bin/"$b" 2>/dev/null | head -1)
  install -m 0755 "$f" "$BIN/$b"
done
cp build/pause/linux/pause.c "$BIN/pause.c" 2>/dev/null || cp build/pause/pause.c "$BIN/pause.c"
echo "k8s binaries built into $BIN"
