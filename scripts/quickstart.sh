#!/usr/bin/env bash
# Set up dsmount on this machine and show it serving a demo datastore.
#   scripts/quickstart.sh          install what is missing, start the daemon, attach, list
#   scripts/quickstart.sh stop     stop the demo daemon (unmounts)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/demo
SOCK=$DEMO/control.sock
MNT=$DEMO/datastores
DSMOUNT=("$ROOT/.venv/bin/dsmount" --socket "$SOCK")

if [ "${1:-}" = "stop" ]; then
  if [ -f "$DEMO/daemon.pid" ] && kill "$(cat "$DEMO/daemon.pid")" 2>/dev/null; then
    for _ in $(seq 50); do grep -q " $MNT " /proc/mounts || break; sleep 0.1; done
    echo "demo daemon stopped; $MNT unmounted"
  else
    echo "no demo daemon running"
  fi
  rm -f "$DEMO/daemon.pid"
  exit 0
fi

bash scripts/install-deps.sh

echo "== creating a demo dataset in $DEMO/data"
mkdir -p "$DEMO/data/train" "$DEMO/data/val"
for i in 1 2 3; do echo "sample $i" > "$DEMO/data/train/sample$i.txt"; done
echo "validation" > "$DEMO/data/val/val1.txt"
[ -f "$DEMO/data/train/blob.bin" ] || head -c 8388608 /dev/urandom > "$DEMO/data/train/blob.bin"

if "${DSMOUNT[@]}" ping >/dev/null 2>&1; then
  echo "== demo daemon already running"
else
  echo "== starting the daemon on $MNT"
  "${DSMOUNT[@]}" daemon --mountpoint "$MNT" --state-dir "$DEMO/state" \
    --log-file "$DEMO/daemon.log"
  "${DSMOUNT[@]}" status --json | "$ROOT/.venv/bin/python" -c \
    'import json,sys; print(json.load(sys.stdin)["pid"])' > "$DEMO/daemon.pid"
fi

"${DSMOUNT[@]}" list --json | grep -q '"name": "demo"' \
  || "${DSMOUNT[@]}" attach demo --local "$DEMO/data"
echo "== attached datastores"
"${DSMOUNT[@]}" list
echo "== the tree under $MNT"
find "$MNT" | sort
echo "== read through the mount"
cat "$MNT/demo/train/sample1.txt"
sha256sum "$MNT/demo/train/blob.bin" "$DEMO/data/train/blob.bin"
cat <<MSG

dsmount is serving $DEMO/data at $MNT/demo.
  try:   ${DSMOUNT[*]} status
  stop:  scripts/quickstart.sh stop
MSG
