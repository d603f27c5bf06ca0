#!/bin/sh
# OCI runtime registered with dockerd in front of runc. dockershim asks for
# oom_score_adj -998 on pod sandboxes, which this sandbox cannot set (runc then
# fails with "can't get final child's PID from pipe"). Clamp
# process.oomScoreAdj at 0 in the bundle's config.json, then exec runc.
bundle=""
process=""
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle=$arg ;; --process|-p) process=$arg ;; esac
  case "$arg" in --bundle=*) bundle=${arg#--bundle=} ;; --process=*) process=${arg#--process=} ;; esac
  prev=$arg
done
[ -n "$bundle" ] || bundle=.
config="$bundle/config.json"
if [ -f "$config" ] && grep -q '"oomScoreAdj"[[:space:]]*:[[:space:]]*-' "$config"; then
  sed -i -E 's/"oomScoreAdj"[[:space:]]*:[[:space:]]*-[0-9]+/"oomScoreAdj":0/' "$config"
fi
# A privileged container (kind's nodes) asks for every capability; this sandbox's
# bounding set lacks CAP_SYS_RESOURCE (bit 24), and runc then fails with "unable to
# apply caps: operation not permitted". Ask only for what the host can give.
# `runc exec` (docker exec) reads its capabilities from --process instead.
for spec in "$config" "$process"; do
  [ -n "$spec" ] && [ -f "$spec" ] && grep -q '"CAP_SYS_RESOURCE"' "$spec" || continue
  bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
  if [ $(( 0x$bnd >> 24 & 1 )) -eq 0 ]; then
    sed -i -E 's/"CAP_SYS_RESOURCE",?//g; s/,[[:space:]]*\]/]/g' "$spec"
  fi
done
exec "${MLENDPOINTS_RUNC:-$(PATH=$PATH:/usr/sbin:/usr/local/sbin command -v runc)}" "$@"
