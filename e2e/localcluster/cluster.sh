#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine (default 1.37, or
# K8S_VERSION=<minor>), every component built from the Go module proxy by
# build-k8s.sh (see docs/development.md):
#   containerd 2.x (+ runc wrapper, CNI bridge) -> etcd -> kube-apiserver ->
#   controller-manager, scheduler, kubelet, kube-proxy (iptables), CoreDNS,
#   metrics-server (the metrics.k8s.io APIService: kubectl top, HPA CPU targets).
# A private dockerd builds the images; `load` imports them into containerd.
#
#   cluster.sh up        start everything (no-op when already running and healthy)
#   cluster.sh down      stop every process it started (by PID), remove the pod
#                        sandboxes, clean kube-proxy's rules, drop cluster state
#   cluster.sh env       print `export KUBECONFIG=... DOCKER_HOST=...`
#   cluster.sh status    say what runs
#   cluster.sh docker    start only dockerd (image builds)
#   cluster.sh load TAG  copy a docker image into containerd (no-op when current)
#   cluster.sh restart-apiserver SECONDS
#                        stop kube-apiserver, keep it down SECONDS, start it again
#
# Everything lives under $MLENDPOINTS_CACHE (default ~/.cache/mlendpoints):
# k8s/ and tools/ (binaries by version), docker/ and containerd/ (image
# stores, kept across down/up) and cluster/ (certs, tokens, kubeconfig, logs,
# PIDs, etcd and kubelet state).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$HERE/versions.sh"
STATE=$CACHE/cluster
PKI=$STATE/pki
LOGS=$STATE/logs
RUN=$STATE/run
DOCKER_DATA=$CACHE/docker
DOCKER_SOCK=$RUN/docker.sock
export DOCKER_HOST=unix://$DOCKER_SOCK
CONTAINERD_DATA=$CACHE/containerd
CONTAINERD_SOCK=$RUN/containerd/containerd.sock

# The API server binds the docker bridge gateway, so pods (through the
# `kubernetes` Service) and host clients reach it at the same address. Pods
# get addresses on their own CNI bridge; the host is the gateway of both.
GATEWAY=172.17.0.1
POD_CIDR=10.88.0.0/16
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
API_PORT=6443
# metrics-server listens on the host; the aggregator reaches it through a
# selector-less Service whose endpoint is this port on the gateway.
METRICS_PORT=4443
ETCD_PORT=${MLENDPOINTS_ETCD_PORT:-23790}
NODE=mlendpoints-node
PAUSE_IMAGE=registry.k8s.io/pause:3.10-mlendpoints
READY_TIMEOUT=${MLENDPOINTS_READY_TIMEOUT:-90}
COMPONENTS=(metrics-server coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd dockerd)

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

# How a component we started ended: its exit status, or the signal that killed it.
# It is this script's child, so `wait` can still collect it.
exit_status() {
  local pid rc=0
  pid=$(cat "$(pidfile "$1")" 2>/dev/null) || { echo "no pid file"; return; }
  wait "$pid" 2>/dev/null || rc=$?
  if [ "$rc" -eq 127 ] && ! kill -0 "$pid" 2>/dev/null; then echo "pid $pid, status unknown"
  elif [ "$rc" -gt 128 ]; then echo "pid $pid killed by signal $((rc - 128))"
  else echo "pid $pid exit status $rc"; fi
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
      tail_log "$name"; die "$name exited during start-up ($(exit_status "$name"))"
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
  rm -f "$PKI/.aggregator-done"  # a new CA and token file: the aggregator's part is made again too
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
system:coredns system:coredns
EOF
  for user in admin system:node:$NODE system:kube-proxy system:kube-controller-manager system:kube-scheduler system:coredns; do
    write_kubeconfig "$STATE/${user//:/_}.kubeconfig" "$(cat "$STATE/${user//:/_}.token")"
  done
  cp "$STATE/admin.kubeconfig" "$STATE/kubeconfig"
  touch "$PKI/.done"
}

# The aggregation layer (metrics-server behind metrics.k8s.io), added to a PKI
# made before it: the API server's front-proxy client (its own CA, as kubeadm
# does), metrics-server's serving certificate (for the Service name the
# aggregator checks) and its kubelet client certificate, and its token.
gen_aggregator_certs() {
  [ -f "$PKI/.aggregator-done" ] && return 0
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mlendpoints-front-proxy-ca" \
      -keyout front-proxy-ca.key -out front-proxy-ca.crt 2>/dev/null
    sign() { # sign NAME SUBJECT EXTFILE [CA]
      openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA "${4:-ca}.crt" -CAkey "${4:-ca}.key" -CAcreateserial -days 3650 \
        -extfile "$3" -out "$1.crt" 2>/dev/null
    }
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    sign front-proxy-client "/CN=front-proxy-client" client.ext front-proxy-ca
    sign metrics-server-kubelet-client "/CN=system:metrics-server" client.ext
    printf 'subjectAltName=IP:%s,DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
      "$GATEWAY" >metrics-server.ext
    sign metrics-server "/CN=metrics-server" metrics-server.ext
    rm -f ./*.csr
  )
  local token
  token=$(openssl rand -hex 16)
  echo "$token,system:metrics-server,system:metrics-server,\"system:metrics-server\"" >>"$STATE/tokens.csv"
  echo "$token" >"$STATE/system_metrics-server.token"
  write_kubeconfig "$STATE/system_metrics-server.kubeconfig" "$token"
  touch "$PKI/.aggregator-done"
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
# dockerd only builds images (tests' and the project's); pods run on containerd.
start_dockerd() {
  running_pid dockerd >/dev/null && docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || die "dockerd not found: run scripts/setup.sh (Debian docker.io)"
  if ip link show docker0 >/dev/null 2>&1 && ! running_pid dockerd >/dev/null; then
    # A leftover bridge from our own earlier dockerd is fine; another
    # running dockerd owning it is not.
    pgrep -x dockerd >/dev/null && die "another dockerd owns docker0; stop it or use USE_EXISTING_CLUSTER=1"
  fi
  mkdir -p "$DOCKER_DATA" "$RUN/docker-exec" "$LOGS"
  start dockerd dockerd \
    --host "$DOCKER_HOST" --pidfile "$RUN/dockerd.pidfile" \
    --data-root "$DOCKER_DATA" --exec-root "$RUN/docker-exec" \
    --exec-opt native.cgroupdriver=cgroupfs \
    --add-runtime "mlendpoints-runc=$HERE/runc-wrapper.sh" --default-runtime mlendpoints-runc \
    --oom-score-adjust 0 --log-level warn
  wait_for dockerd 60 docker info
}

ctr() { "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# containerd with the CRI plugin: runc through the oom_score_adj clamp
# (runc-wrapper.sh: this sandbox cannot lower oom_score_adj, and containerd
# asks -998 for pod sandboxes), cgroupfs (cgroup v1 host), CNI bridge.
start_containerd() {
  mkdir -p "$CONTAINERD_DATA" "$RUN/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam"
  local cni_dir=/usr/lib/cni
  [ -x "$cni_dir/bridge" ] || die "CNI plugins not found in $cni_dir: run scripts/setup.sh (Debian containernetworking-plugins)"
  # firewall: docker sets FORWARD's policy to DROP; this accepts the pods' traffic.
  cat >"$STATE/cni/net.d/10-mlendpoints.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "mlendpoints", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$STATE/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
EOF
  cat >"$STATE/containerd.toml" <<EOF
version = 3
root = "$CONTAINERD_DATA"
state = "$RUN/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$HERE/runc-wrapper.sh"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$cni_dir"]
    conf_dir = "$STATE/cni/net.d"
EOF
  # Pods reach Services backed by pods on the same bridge: bridged traffic must pass iptables.
  modprobe br_netfilter 2>/dev/null || true
  [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 >/proc/sys/net/ipv4/ip_forward
  start containerd env PATH="$CONTAINERD_BIN:$PATH" "$CONTAINERD_BIN/containerd" --config "$STATE/containerd.toml"
  wait_for containerd 60 ctr version
}

# load TAG...: copy docker images into containerd's k8s.io namespace, unless
# containerd already holds the same image (docker image ID kept in a stamp).
cmd_load() {
  local tag id stamp
  start_dockerd
  running_pid containerd >/dev/null || start_containerd
  mkdir -p "$CONTAINERD_DATA/mlendpoints-loaded"
  for tag in "$@"; do
    id=$(docker image inspect -f '{{.Id}}' "$tag") || die "load: no docker image $tag"
    stamp=$CONTAINERD_DATA/mlendpoints-loaded/$(echo "$tag" | tr '/:' '__')
    if [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && ctr images ls -q | grep -qx "$(normalize "$tag")"; then
      continue
    fi
    docker save "$tag" | ctr images import - >/dev/null || die "load: importing $tag into containerd failed"
    echo "$id" >"$stamp"
    log "loaded $tag into containerd"
  done
}

normalize() { # docker's short names, as containerd stores them
  local ref=$1
  case ${ref%%/*} in *.*|*:*|localhost) ;; *) [[ $ref == */* ]] && ref=docker.io/$ref || ref=docker.io/library/$ref ;; esac
  echo "$ref"
}

ensure_pause_image() {
  ctr images ls -q | grep -qx "$PAUSE_IMAGE" && return 0
  if [ ! -x "$K8S_BIN/pause" ]; then
    gcc -Os -static -o "$K8S_BIN/pause" "$K8S_BIN/pause.c" -DVERSION=v3.10-mlendpoints
    strip "$K8S_BIN/pause"
  fi
  local dir
  dir=$(mktemp -d)
  cp "$K8S_BIN/pause" "$dir/pause"
  tar -C "$dir" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
  rm -rf "$dir"
  cmd_load "$PAUSE_IMAGE"
}

# Objects every cluster has that no controller makes here: CoreDNS's RBAC and
# the kube-dns Service, whose endpoint is CoreDNS on the host; metrics-server's
# RBAC (as its own manifest has it), its selector-less Service with an
# Endpoints object (the EndpointSlice mirroring controller makes the slice the
# 1.33+ aggregator and kube-proxy read; older aggregators read Endpoints) and
# the v1beta1.metrics.k8s.io APIService.
apply_cluster_objects() {
  local kind path obj ca_bundle
  ca_bundle=$(base64 -w0 "$PKI/ca.crt")
  while IFS='|' read -r path obj; do
    [ -n "$path" ] || continue
    curl -sS --max-time 10 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$STATE/admin.token")" \
      -H 'Content-Type: application/json' -o /dev/null -w '%{http_code}\n' -X POST \
      --data "$obj" "https://$GATEWAY:$API_PORT$path" | grep -Eq '^(201|409)$' || die "creating $path failed: $obj"
  done <<EOF
/apis/rbac.authorization.k8s.io/v1/clusterroles|{"metadata":{"name":"system:coredns"},"rules":[{"apiGroups":[""],"resources":["endpoints","services","pods","namespaces"],"verbs":["list","watch"]},{"apiGroups":["discovery.k8s.io"],"resources":["endpointslices"],"verbs":["list","watch"]}]}
/apis/rbac.authorization.k8s.io/v1/clusterrolebindings|{"metadata":{"name":"system:coredns"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:coredns"},"subjects":[{"kind":"User","name":"system:coredns"}]}
/api/v1/namespaces/kube-system/services|{"metadata":{"name":"kube-dns","labels":{"k8s-app":"kube-dns"}},"spec":{"clusterIP":"$DNS_IP","ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}}
/apis/rbac.authorization.k8s.io/v1/clusterroles|{"metadata":{"name":"system:metrics-server"},"rules":[{"apiGroups":[""],"resources":["nodes/metrics"],"verbs":["get"]},{"apiGroups":[""],"resources":["pods","nodes"],"verbs":["get","list","watch"]}]}
/apis/rbac.authorization.k8s.io/v1/clusterroles|{"metadata":{"name":"system:aggregated-metrics-reader","labels":{"rbac.authorization.k8s.io/aggregate-to-admin":"true","rbac.authorization.k8s.io/aggregate-to-edit":"true","rbac.authorization.k8s.io/aggregate-to-view":"true"}},"rules":[{"apiGroups":["metrics.k8s.io"],"resources":["pods","nodes"],"verbs":["get","list","watch"]}]}
/apis/rbac.authorization.k8s.io/v1/clusterrolebindings|{"metadata":{"name":"system:metrics-server"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:metrics-server"},"subjects":[{"kind":"User","name":"system:metrics-server"}]}
/apis/rbac.authorization.k8s.io/v1/clusterrolebindings|{"metadata":{"name":"metrics-server:system:auth-delegator"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:auth-delegator"},"subjects":[{"kind":"User","name":"system:metrics-server"}]}
/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings|{"metadata":{"name":"metrics-server-auth-reader"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"extension-apiserver-authentication-reader"},"subjects":[{"kind":"User","name":"system:metrics-server"}]}
/api/v1/namespaces/kube-system/services|{"metadata":{"name":"metrics-server","labels":{"k8s-app":"metrics-server"}},"spec":{"ports":[{"name":"https","port":443,"targetPort":$METRICS_PORT,"protocol":"TCP"}]}}
/api/v1/namespaces/kube-system/endpoints|{"metadata":{"name":"metrics-server","labels":{"k8s-app":"metrics-server"}},"subsets":[{"addresses":[{"ip":"$GATEWAY"}],"ports":[{"name":"https","port":$METRICS_PORT,"protocol":"TCP"}]}]}
/apis/apiregistration.k8s.io/v1/apiservices|{"metadata":{"name":"v1beta1.metrics.k8s.io","labels":{"k8s-app":"metrics-server"}},"spec":{"group":"metrics.k8s.io","version":"v1beta1","groupPriorityMinimum":100,"versionPriority":100,"service":{"namespace":"kube-system","name":"metrics-server","port":443},"caBundle":"$ca_bundle"}}
/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices|{"metadata":{"name":"kube-dns-host","labels":{"kubernetes.io/service-name":"kube-dns","endpointslice.kubernetes.io/managed-by":"mlendpoints-localcluster"}},"addressType":"IPv4","endpoints":[{"addresses":["$GATEWAY"],"conditions":{"ready":true}}],"ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}
EOF
}

# A ClusterIP that kube-proxy has not programmed yet must be refused, as on a
# real cluster, not routed out: this sandbox answers unknown addresses with
# HTTP 404. DNAT runs before the filter table, so programmed Services pass.
SERVICE_CHAIN=MLENDPOINTS-UNSYNCED
refuse_unprogrammed_services() {
  iptables -N "$SERVICE_CHAIN" 2>/dev/null || iptables -F "$SERVICE_CHAIN"
  iptables -A "$SERVICE_CHAIN" -d "$SERVICE_CIDR" -p tcp -j REJECT --reject-with tcp-reset
  iptables -A "$SERVICE_CHAIN" -d "$SERVICE_CIDR" -p udp -j REJECT
  local hook
  for hook in OUTPUT FORWARD; do
    iptables -C "$hook" -j "$SERVICE_CHAIN" 2>/dev/null || iptables -I "$hook" -j "$SERVICE_CHAIN"
  done
}

drop_service_chain() {
  local hook
  for hook in OUTPUT FORWARD; do iptables -D "$hook" -j "$SERVICE_CHAIN" 2>/dev/null || true; done
  iptables -F "$SERVICE_CHAIN" 2>/dev/null && iptables -X "$SERVICE_CHAIN" 2>/dev/null || true
}

start_coredns() {
  cat >"$STATE/Corefile" <<EOF
.:53 {
    bind $GATEWAY
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE/system_coredns.kubeconfig mlendpoints-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . /etc/resolv.conf
    cache 30
    loop
    loadbalance
}
EOF
  start coredns "$COREDNS_BIN/coredns" -conf "$STATE/Corefile"
  wait_for coredns 30 curl -fsS http://127.0.0.1:18181/ready
}

# kubelet serves on the bridge gateway (its InternalIP, which the API server
# dials for logs/exec; a loopback node IP is rejected). Only clients with a
# certificate from the cluster CA get in: no anonymous access from pods.
write_kubelet_config() {
  cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GATEWAY
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
# This host mounts cgroup v1; kubelet 1.35+ refuses it unless told otherwise.
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
oomScoreAdj: 0
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
volumePluginDir: $STATE/kubelet/volume-plugins
serializeImagePulls: false
EOF
}

# metrics-server as a host process: it scrapes the kubelet's /metrics/resource
# (CRI stats) with a client certificate of the cluster CA (the kubelet's own
# serving certificate is self-signed: not verified), serves metrics.k8s.io with
# a certificate the APIService's caBundle vouches for, and authenticates the
# aggregator's front-proxy requests through kube-system's
# extension-apiserver-authentication ConfigMap. Ready once it has scraped the
# node twice (its resolution, 10 s, apart): the APIService then turns Available.
start_metrics_server() {
  start metrics-server "$METRICS_SERVER_BIN/metrics-server" \
    --kubeconfig "$STATE/system_metrics-server.kubeconfig" \
    --authentication-kubeconfig "$STATE/system_metrics-server.kubeconfig" \
    --authorization-kubeconfig "$STATE/system_metrics-server.kubeconfig" \
    --bind-address "$GATEWAY" --secure-port "$METRICS_PORT" \
    --tls-cert-file "$PKI/metrics-server.crt" --tls-private-key-file "$PKI/metrics-server.key" \
    --kubelet-client-certificate "$PKI/metrics-server-kubelet-client.crt" \
    --kubelet-client-key "$PKI/metrics-server-kubelet-client.key" \
    --kubelet-insecure-tls --kubelet-preferred-address-types InternalIP \
    --kubelet-use-node-status-port --metric-resolution 10s --kubelet-request-timeout 5s
  wait_for metrics-server "$READY_TIMEOUT" metrics_available
}

metrics_available() {
  api /apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io |
    jq -e '.status.conditions[] | select(.type=="Available") | .status=="True"' | grep -q true
}

start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
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
    --kubelet-preferred-address-types InternalIP --profiling=false \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true
}

start_control_plane() {
  mkdir -p "$STATE/etcd" "$STATE/kubelet" "$LOGS"
  start etcd "$ETCD_BIN/etcd" --name mlendpoints --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "mlendpoints=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 2))"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start_apiserver
  wait_for kube-apiserver 90 api /readyz

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/system_kube-controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 10257 --cluster-name mlendpoints-local \
    --horizontal-pod-autoscaler-sync-period 5s
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE/system_kube-scheduler.kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 10259
  write_kubelet_config
  start kubelet "$K8S_BIN/kubelet" \
    --kubeconfig "$STATE/system_node_$NODE.kubeconfig" --config "$STATE/kubelet-config.yaml" \
    --hostname-override "$NODE" --node-ip "$GATEWAY" \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki"
  refuse_unprogrammed_services
  start kube-proxy "$K8S_BIN/kube-proxy" \
    --kubeconfig "$STATE/system_kube-proxy.kubeconfig" --hostname-override "$NODE" \
    --proxy-mode iptables --cluster-cidr "$POD_CIDR" \
    --bind-address 127.0.0.1 --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 \
    --conntrack-max-per-core 0 --oom-score-adj 0
  apply_cluster_objects
  start_coredns
  wait_for node "$READY_TIMEOUT" node_ready
  start_metrics_server
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

# Pod sandboxes and their containers (containerd keeps them across restarts).
remove_pods() {
  local c ids
  ids=$(ctr containers ls -q 2>/dev/null || true)
  for c in $ids; do
    ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
  done
  for c in $ids; do
    ctr tasks delete -f "$c" >/dev/null 2>&1 || true
    ctr containers delete "$c" >/dev/null 2>&1 || true
  done
}

cmd_down() {
  local c
  for c in metrics-server coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid "$c"; done
  if running_pid containerd >/dev/null; then remove_pods; fi
  [ -x "$K8S_BIN/kube-proxy" ] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  drop_service_chain
  stop_pid containerd
  # Shims outlive containerd; any still running belong to pods just removed.
  pkill -f -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  stop_pid dockerd
  if [ -d "$STATE/kubelet" ] || [ -d "$RUN/containerd" ]; then
    # kubelet mounts tmpfs for secret/projected volumes; containerd mounts rootfs and shm.
    grep -oE " ($STATE/kubelet|$RUN/containerd)[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done || true
  fi
  ip link delete cni0 2>/dev/null || true
  rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/cni/ipam" "$RUN/containerd/state"
  log "down"
}

cmd_up() {
  local t0=$SECONDS
  if healthy; then
    local running
    running=$(api /version | jq -r .gitVersion)
    [ "$running" = "v$K8S_FULL" ] && { log "already running ($STATE/kubeconfig)"; return 0; }
    log "running $running, asked for v$K8S_FULL: restarting"
  fi
  # Processes of an earlier run killed from outside (a session's end) leave etcd's data, pod
  # sandboxes and mounts behind: start from a clean state rather than resume half of one.
  if any_running || [ -d "$STATE/etcd" ]; then log "leftovers of an earlier run: cleaning up first"; cmd_down; fi
  mkdir -p "$STATE" "$LOGS" "$RUN"
  bash "$HERE/build-k8s.sh" >&2
  UP_IN_PROGRESS=1
  gen_certs
  gen_aggregator_certs
  start_dockerd
  start_containerd
  ensure_pause_image
  start_control_plane
  UP_IN_PROGRESS=
  log "Kubernetes v$K8S_FULL up in $((SECONDS - t0))s; kubeconfig: $STATE/kubeconfig"
}

# restart-apiserver SECONDS: stop kube-apiserver (TERM), leave it down SECONDS, start it again with
# the same flags and wait until it is ready (bench/reliability.py: the data plane must not notice).
cmd_restart_apiserver() {
  local secs=${1:-20}
  [[ $secs =~ ^[0-9]+$ ]] || die "restart-apiserver: SECONDS must be a whole number, not '$secs'"
  running_pid kube-apiserver >/dev/null || die "restart-apiserver: kube-apiserver is not running"
  stop_pid kube-apiserver
  log "kube-apiserver stopped; starting it again in ${secs}s"
  sleep "$secs"
  [ -f "$LOGS/kube-apiserver.log" ] && mv "$LOGS/kube-apiserver.log" "$LOGS/kube-apiserver.log.prev"
  start_apiserver
  wait_for kube-apiserver 90 api /readyz
  log "kube-apiserver ready again"
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then echo "$c: running (pid $pid)"; else echo "$c: stopped"; rc=1; fi
  done
  if [ -f "$STATE/admin.token" ] && api /readyz >/dev/null 2>&1; then
    echo "kube-apiserver: ready at https://$GATEWAY:$API_PORT ($(api /version | jq -r .gitVersion))"
    node_ready && echo "node $NODE: Ready" || { echo "node $NODE: not ready"; rc=1; }
    metrics_available && echo "metrics.k8s.io: Available" || { echo "metrics.k8s.io: not available"; rc=1; }
  else
    echo "kube-apiserver: not answering"; rc=1
  fi
  return $rc
}

cmd_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export DOCKER_HOST=$DOCKER_HOST"
  echo "export CONTAINER_RUNTIME_ENDPOINT=unix://$CONTAINERD_SOCK"
  # kubectl of the cluster's own version.
  echo "export MLENDPOINTS_K8S_BIN=$K8S_BIN"
  # kubectl of the cluster's own version first (eval "$(cluster.sh env)" in a shell).
  echo "export PATH=$K8S_BIN:\$PATH"
}

[ $# -ge 1 ] || die "usage: $0 up|down|env|status|docker|load TAG...|restart-apiserver SECONDS"
case $1 in
  env) cmd_env; exit 0 ;;
  status) cmd_status; exit $? ;;
esac
[ "$(id -u)" = 0 ] || die "$1 needs root (dockerd, containerd, iptables, kubelet)"
mkdir -p "$RUN"
# One command at a time: concurrent test sessions share one cluster.
exec 9>"$RUN/lock"
flock 9
case $1 in
  up) cmd_up ;;
  down) cmd_down ;;
  docker) mkdir -p "$LOGS"; start_dockerd ;;
  load) shift; mkdir -p "$LOGS"; cmd_load "$@" ;;
  restart-apiserver) shift; cmd_restart_apiserver "${1:-20}" ;;
  *) die "usage: $0 up|down|env|status|docker|load TAG...|restart-apiserver SECONDS" ;;
esac
