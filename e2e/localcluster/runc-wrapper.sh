#!/bin/sh
# OCI runtime registered with dockerd in front of runc. dockershim asks for
# oom_score_adj -998 on pod sandboxes, which this sandbox cannot set (runc then
# fails with "can't get final child's PID from pipe"). Clamp
# process.oomScoreAdj at 0 in the bundle's config.json, then exec runc.
bundle=""
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle=$arg ;; esac
  case "$arg" in --bundle=*) bundle=${arg#--bundle=} ;; esac
  prev=$arg
done
[ -n "$bundle" ] || bundle=.
config="$bundle/config.json"
if [ -f "$config" ] && grep -q '"oomScoreAdj"[[:space:]]*:[[:space:]]*-' "$config"; then
  sed -i -E 's/"oomScoreAdj"[[:space:]]*:[[:space:]]*-[0-9]+/"oomScoreAdj":0/' "$config"
fi
exec "${MLENDPOINTS_RUNC:-$(PATH=$PATH:/usr/sbin:/usr/local/sbin command -v runc)}" "$@"
