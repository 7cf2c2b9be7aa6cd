#!/usr/bin/env bash
# Every prototype row of docs/multicore.md, in one run (root; run it alone):
#   flock -x /tmp/machine.lock bash scripts/probes/run_all.sh /tmp/probe-rows
set -u
out=${1:-/tmp/probe-rows}
mkdir -p "$out"
cd "$(dirname "$0")/../.."
py=.venv/bin/python
run() {  # label, script, args...
  local label=$1 script=$2; shift 2
  echo "== $label" >&2
  timeout 300 $py "scripts/probes/$script" bench --epochs 3 --label "$label" \
    --json "$out/$label.json" "$@" 2>&1 | grep -v '^$' | tail -4
}
run dsmount-today fuse_workers.py --dsmount --subdir tree
run p1-pyfuse3 fuse_workers.py --workers 0
run p2-fork1 fuse_workers.py --workers 1
run p2-fork2 fuse_workers.py --workers 2
run p2-fork4 fuse_workers.py --workers 4
run p3-raw1 rawfuse.py --procs 1
run p3-raw1-thr2 rawfuse.py --procs 1 --readers 2
run p3-raw2 rawfuse.py --procs 2
run p3-raw4 rawfuse.py --procs 4
run p3-raw2-sharedfd rawfuse.py --procs 2 --shared-fd
run p3-raw1-noflush rawfuse.py --procs 1 --noflush
run p3-raw2-noflush rawfuse.py --procs 2 --noflush
run p3-raw2-noopen rawfuse.py --procs 2 --no-open
run p3-pt1 rawfuse.py --procs 1 --passthrough
run p3-pt1-noflush rawfuse.py --procs 1 --passthrough --noflush
run p3-pt2-noflush rawfuse.py --procs 2 --passthrough --noflush
run p3-pt1-noflush-bcache rawfuse.py --procs 1 --passthrough --noflush --backing-cache
