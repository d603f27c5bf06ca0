#!/usr/bin/env bash
# A real single-node Kubernetes 1.20 cluster on this machine, built from
# Debian's packages (see docs/development.md):
#   dockerd (+ runc wrapper) -> etcd -> kube-apiserver -> controller-manager,
#   scheduler, kubelet (dockershim), kube-proxy (iptables).
#
#   cluster.sh up      start everything (no-op when already running and healthy)
#   cluster.sh down    stop every process it started (by PID), remove the pod
#                      containers, clean kube-proxy's rules, drop cluster state
#   cluster.sh env     print `export KUBECONFIG=... DOCKER_HOST=...`
#   cluster.sh status  say what runs
#   cluster.sh docker  start only dockerd (image builds)
#
# Everything lives under $MLENDPOINTS_CACHE (default ~/.cache/mlendpoints):
# bin/ (k8s binaries), docker/ (image store, kept across down/up) and
# cluster/ (certs, tokens, kubeconfig, logs, PIDs, etcd and kubelet state).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MLENDPOINTS_CACHE:-$HOME/.cache/mlendpoints}
BIN=$CACHE/bin
STATE=$CACHE/cluster
PKI=$STATE/pki
LOGS=$STATE/logs
RUN=$STATE/run
DOCKER_DATA=$CACHE/docker
DOCKER_SOCK=$RUN/docker.sock
export DOCKER_HOST=unix://$DOCKER_SOCK

# The API server binds the docker bridge gateway, so pods (through the
# `kubernetes` Service) and host clients reach it at the same address.
GATEWAY=172.17.0.1
BRIDGE_CIDR=172.17.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_PORT=6443
ETCD_PORT=${MLENDPOINTS_ETCD_PORT:-23790}
NODE=mlendpoints-node
PAUSE_IMAGE=k8s.gcr.io/pause:3.2
READY_TIMEOUT=${MLENDPOINTS_READY_TIMEOUT:-90}
COMPONENTS=(kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd dockerd)

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }
# Set while `up` runs: a failed start is torn down, never left half-running.
UP_IN_PROGRESS=
on_exit() { local rc=$?; if [ $rc -ne 0 ] && [ -n "$UP_IN_PROGRESS" ]; then UP_IN_PROGRESS=; cmd_down; fi; exit $rc; }
trap on_exit EXIT

pidfile() { echo "$RUN/$1.pid"; }

# PID of a component we started, if it still runs the same program.
running_pid() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -d "/proc/$pid" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
  echo "$pid"
}

# start NAME ARGV...: run detached in its own session, log to $LOGS/NAME.log.
start() {
  local name=$1; shift
  (
    # Daemons must not inherit lock files (ours or a caller's): they would hold them forever.
    for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
    exec setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$(pidfile "$name")"
  # Until the subshell has exec'd, its command line is still this script's.
  local i
  for i in $(seq 1 50); do running_pid "$name" >/dev/null && break; sleep 0.1; done
}

tail_log() {
  log "---- last lines of $LOGS/$1.log ----"
  tail -n 40 "$LOGS/$1.log" >&2 2>/dev/null || true
}

# wait_for NAME SECONDS CHECK...: poll CHECK until it succeeds; on timeout or
# when NAME dies, print its log tail and fail.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$name" != node ] && ! running_pid "$name" >/dev/null; then
      tail_log "$name"; die "$name exited during start-up"
    fi
    if [ $SECONDS -ge $deadline ]; then
      [ "$name" = node ] && { tail_log kubelet; tail_log kube-apiserver; } || tail_log "$name"
      die "$name not ready after ${secs}s"
    fi
    sleep 0.5
  done
}

api() { # api PATH: GET against the API server as admin
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$STATE/admin.token")" \
    "https://$GATEWAY:$API_PORT$1"
}

node_ready() {
  api "/api/v1/nodes/$NODE" | jq -e '.status.conditions[] | select(.type=="Ready") | .status=="True"' | grep -q true
}

healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do running_pid "$c" >/dev/null || return 1; done
  api /readyz >/dev/null && node_ready
}

any_running() {
  local c
  for c in "${COMPONENTS[@]}"; do running_pid "$c" >/dev/null && return 0; done
  return 1
}

# --- credentials -------------------------------------------------------------
gen_certs() {
  [ -f "$PKI/.done" ] && return 0
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mlendpoints-local-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    sign() { # sign NAME SUBJECT [EXTFILE]
      openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        ${3:+-extfile "$3"} -out "$1.crt" 2>/dev/null
    }
    printf 'subjectAltName=IP:%s,IP:127.0.0.1,IP:%s,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
      "$GATEWAY" "${SERVICE_CIDR%.0/*}.1" >apiserver.ext
    sign apiserver "/CN=kube-apiserver" apiserver.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
  )
  # Static tokens: admin (system:masters) and one identity per component, so
  # RBAC and the Node authorizer see the usual users.
  local user group token
  : >"$STATE/tokens.csv"
  while read -r user group; do
    token=$(openssl rand -hex 16)
    echo "$token,$user,$user,\"$group\"" >>"$STATE/tokens.csv"
    echo "$token" >"$STATE/${user//:/_}.token"
  done <<EOF
admin system:masters
system:node:$NODE system:nodes
system:kube-proxy system:node-proxier
system:kube-controller-manager system:kube-controller-manager
system:kube-scheduler system:kube-scheduler
EOF
  for user in admin system:node:$NODE system:kube-proxy system:kube-controller-manager system:kube-scheduler; do
    write_kubeconfig "$STATE/${user//:/_}.kubeconfig" "$(cat "$STATE/${user//:/_}.token")"
  done
  cp "$STATE/admin.kubeconfig" "$STATE/kubeconfig"
  touch "$PKI/.done"
}

write_kubeconfig() { # write_kubeconfig FILE TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mlendpoints-local
  cluster:
    server: https://$GATEWAY:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: user
  user:
    token: $2
contexts:
- name: mlendpoints-local
  context: {cluster: mlendpoints-local, user: user}
current-context: mlendpoints-local
EOF
  chmod 600 "$1"
}

# --- components ----------------------------------------------------------------
start_dockerd() {
  running_pid dockerd >/dev/null && docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || die "dockerd not found: run scripts/setup.sh (Debian docker.io)"
  if ip link show docker0 >/dev/null 2>&1 && ! running_pid dockerd >/dev/null; then
    # A leftover bridge from our own earlier dockerd is fine; another
    # running dockerd owning it is not.
    pgrep -x dockerd >/dev/null && die "another dockerd owns docker0; stop it or use USE_EXISTING_CLUSTER=1"
  fi
  mkdir -p "$DOCKER_DATA" "$RUN/docker-exec" "$LOGS"
  # Pods get docker bridge IPs; the kernel must see bridged traffic so a pod
  # reaching a Service backed by a pod on the same bridge gets NATed replies.
  [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  start dockerd dockerd \
    --host "$DOCKER_HOST" --pidfile "$RUN/dockerd.pidfile" \
    --data-root "$DOCKER_DATA" --exec-root "$RUN/docker-exec" \
    --exec-opt native.cgroupdriver=cgroupfs \
    --add-runtime "mlendpoints-runc=$HERE/runc-wrapper.sh" --default-runtime mlendpoints-runc \
    --oom-score-adjust 0 --log-level warn
  wait_for dockerd 60 docker info
}

ensure_pause_image() {
  docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  if [ ! -x "$BIN/pause" ]; then
    gcc -Os -static -o "$BIN/pause" "$BIN/pause.c" -DVERSION=v3.2-mlendpoints
    strip "$BIN/pause"
  fi
  local dir
  dir=$(mktemp -d)
  cp "$BIN/pause" "$dir/pause"
  tar -C "$dir" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
  rm -rf "$dir"
}

# kubelet serves on the bridge gateway (its InternalIP, which the API server
# dials for logs/exec; a loopback node IP is rejected). Only clients with a
# certificate from the cluster CA get in: no anonymous access from pods.
start_control_plane() {
  mkdir -p "$STATE/etcd" "$STATE/kubelet" "$LOGS"
  start etcd etcd --name mlendpoints --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "mlendpoints=http://127.0.0.1:$((ETCD_PORT + 1))"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$GATEWAY" --advertise-address "$GATEWAY" --secure-port "$API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --token-auth-file "$STATE/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --insecure-port 0 --profiling=false
  wait_for kube-apiserver 60 api /readyz

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/system_kube-controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials --leader-elect=false \
    --bind-address 127.0.0.1 --port 0 --cluster-name mlendpoints-local
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$STATE/system_kube-scheduler.kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --port 0
  start kubelet "$BIN/kubelet" \
    --kubeconfig "$STATE/system_node_$NODE.kubeconfig" --hostname-override "$NODE" \
    --node-ip "$GATEWAY" --address "$GATEWAY" --healthz-bind-address 127.0.0.1 --read-only-port 0 \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" \
    --anonymous-auth=false --client-ca-file "$PKI/ca.crt" --authorization-mode AlwaysAllow \
    --container-runtime docker --docker-endpoint "$DOCKER_HOST" --cgroup-driver cgroupfs \
    --fail-swap-on=false --pod-infra-container-image "$PAUSE_IMAGE" \
    --cgroups-per-qos=false --enforce-node-allocatable= --eviction-hard= \
    --image-gc-high-threshold 100 --oom-score-adj 0 \
    --volume-plugin-dir "$STATE/kubelet/volume-plugins"
  start kube-proxy "$BIN/kube-proxy" \
    --kubeconfig "$STATE/system_kube-proxy.kubeconfig" --hostname-override "$NODE" \
    --proxy-mode iptables --cluster-cidr "$BRIDGE_CIDR" \
    --bind-address 127.0.0.1 --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 \
    --conntrack-max-per-core 0 --oom-score-adj 0
  wait_for node "$READY_TIMEOUT" node_ready
  local c
  for c in kube-controller-manager kube-scheduler kube-proxy; do
    running_pid "$c" >/dev/null || { tail_log "$c"; die "$c exited during start-up"; }
  done
}

# --- commands ------------------------------------------------------------------
stop_pid() { # stop_pid NAME: TERM, then KILL after 15 s
  local pid i
  pid=$(running_pid "$1") || { rm -f "$(pidfile "$1")"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -f "$(pidfile "$1")"
}

cmd_down() {
  local c ids
  for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid "$c"; done
  if running_pid dockerd >/dev/null; then
    # Only the containers kubelet created (dockershim names them k8s_*).
    ids=$(docker ps -aq --filter name=k8s_ 2>/dev/null || true)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
  fi
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop_pid dockerd
  if [ -d "$STATE/kubelet" ]; then
    # kubelet mounts tmpfs for secret/projected volumes under its root dir.
    grep -o " $STATE/kubelet[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done || true
  fi
  rm -rf "$STATE/etcd" "$STATE/kubelet"
  log "down"
}

cmd_up() {
  local t0=$SECONDS
  if healthy; then log "already running ($STATE/kubeconfig)"; return 0; fi
  if any_running; then log "partly running; restarting cleanly"; cmd_down; fi
  mkdir -p "$STATE" "$LOGS" "$RUN"
  bash "$HERE/build-k8s.sh" >&2
  UP_IN_PROGRESS=1
  gen_certs
  start_dockerd
  ensure_pause_image
  start_control_plane
  UP_IN_PROGRESS=
  log "up in $((SECONDS - t0))s; kubeconfig: $STATE/kubeconfig"
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then echo "$c: running (pid $pid)"; else echo "$c: stopped"; rc=1; fi
  done
  if [ -f "$STATE/admin.token" ] && api /readyz >/dev/null 2>&1; then
    echo "kube-apiserver: ready at https://$GATEWAY:$API_PORT"
    node_ready && echo "node $NODE: Ready" || { echo "node $NODE: not ready"; rc=1; }
  else
    echo "kube-apiserver: not answering"; rc=1
  fi
  return $rc
}

cmd_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export DOCKER_HOST=$DOCKER_HOST"
}

[ $# -eq 1 ] || die "usage: $0 up|down|env|status|docker"
case $1 in
  env) cmd_env; exit 0 ;;
  status) cmd_status; exit $? ;;
esac
[ "$(id -u)" = 0 ] || die "$1 needs root (dockerd, iptables, kubelet)"
mkdir -p "$RUN"
# One `up`/`down` at a time: concurrent test sessions share one cluster.
exec 9>"$RUN/lock"
flock 9
case $1 in
  up) cmd_up ;;
  down) cmd_down ;;
  docker) mkdir -p "$LOGS"; start_dockerd ;;
  *) die "usage: $0 up|down|env|status|docker" ;;
esac
