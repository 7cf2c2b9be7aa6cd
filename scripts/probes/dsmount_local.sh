#!/usr/bin/env bash
# Serve TREE through today's dsmount daemon (a local datastore named "tree") at MNT, for the
# epoch harness: scripts/probes/fuse_workers.py bench --dsmount (the same-harness baseline).
# Usage: dsmount_local.sh TREE MNT STATE_DIR
set -eu
tree=$1 mnt=$2 state=$3
here=$(cd "$(dirname "$0")/../.." && pwd)
dsm=$here/.venv/bin/dsmount
rm -rf "$state"; mkdir -p "$state"
export DSMOUNT_SOCKET=$state/control.sock DSMOUNT_CONFIG=$state/dsmount.toml
: > "$state/dsmount.toml"
"$dsm" daemon --foreground --mountpoint "$mnt" --state-dir "$state/attach" \
  --log-level warning &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid' TERM INT
for _ in $(seq 200); do "$dsm" ping >/dev/null 2>&1 && break; sleep 0.05; done
"$dsm" attach tree --local "$tree" >/dev/null
wait $pid
