#!/usr/bin/env bash
# Show dsmount doing its job: a blob container and a version of it mounted and read like a
# training job reads them. Everything lives in ./demo and on 127.0.0.1.
#   scripts/quickstart.sh          install what is missing, start Azurite (a local Azure Blob
#                                  emulator), upload a demo dataset, register it, make version 1,
#                                  start the daemon, attach version 1 as demo/1/ and the
#                                  container itself as demo-live/, train on them
#   scripts/quickstart.sh local    the same daemon serving a local directory instead
#   scripts/quickstart.sh stop     stop the daemon (unmounts) and Azurite, delete ./demo
# The Python half (dataset, training loop) is scripts/quickstart_demo.py.
# Environment (for tests): DSMOUNT_DEMO_DIR moves ./demo, DSMOUNT_PYTHON picks the Python that
# has dsmount installed [.venv/bin/python], QUICKSTART_SKIP_INSTALL=1 skips install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=${DSMOUNT_DEMO_DIR:-$ROOT/demo}
SOCK=$DEMO/control.sock
MNT=$DEMO/datastores
# What the messages show: paths relative to the checkout when under it.
SHOWN=${MNT#"$ROOT"/}
DEMO_SHOWN=${DEMO#"$ROOT"/}
PY=${DSMOUNT_PYTHON:-$ROOT/.venv/bin/python}
HELPER=(python3 "$ROOT/scripts/quickstart_demo.py")
# The daemon, the registry and the CLI of the demo are its own: nothing of the machine's.
export DSMOUNT_SOCKET=$SOCK DSMOUNT_REGISTRY=$DEMO/registry DSMOUNT_CONFIG=$DEMO/dsmount.toml
DSMOUNT=("$PY" -m dsmount)
# Azurite's well-known development account (documented by Microsoft; not a secret).
export DEMO_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

say() { printf '\n== %s\n' "$*"; }
mounted() { grep -q " $MNT " /proc/mounts; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
  if alive "$DEMO/daemon.pid"; then
    kill "$(cat "$DEMO/daemon.pid")"
    for _ in $(seq 100); do alive "$DEMO/daemon.pid" || break; sleep 0.1; done
    echo "daemon stopped"
  fi
  if mounted; then  # a daemon that died leaves its mount behind
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
    echo "stale mount at $MNT removed"
  fi
  if alive "$DEMO/azurite.pid"; then
    kill -- "-$(cat "$DEMO/azurite.pid")" 2>/dev/null || kill "$(cat "$DEMO/azurite.pid")"
    for _ in $(seq 100); do alive "$DEMO/azurite.pid" || break; sleep 0.1; done
    echo "Azurite stopped"
  fi
  local left=""
  alive "$DEMO/daemon.pid" && left+=" daemon"
  alive "$DEMO/azurite.pid" && left+=" Azurite"
  mounted && left+=" mount"
  if [ -n "$left" ]; then
    echo "still running:$left (see $DEMO)" >&2
    exit 1
  fi
  rm -rf --one-file-system "$DEMO"
  echo "nothing left: no demo process, no mount, $DEMO removed"
}

start_daemon() {
  mkdir -p "$DEMO"
  echo "# The quickstart's daemon config: the defaults." > "$DSMOUNT_CONFIG"
  "${DSMOUNT[@]}" daemon --mountpoint "$MNT" --state-dir "$DEMO/state" \
    --log-file "$DEMO/daemon.log"
  "${DSMOUNT[@]}" status --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["pid"])' \
    > "$DEMO/daemon.pid"
}

local_demo() {
  say "a local directory, $DEMO/data"
  "${HELPER[@]}" make "$DEMO/data"
  start_daemon
  "${DSMOUNT[@]}" attach local --local "$DEMO/data"
  "${DSMOUNT[@]}" list
  "${HELPER[@]}" train "$MNT/local" "$DEMO/data.sha256.json" --epochs 1
  echo
  echo "dsmount serves $DEMO/data at $MNT/local.  Stop: scripts/quickstart.sh stop"
}

case "${1:-blob}" in
  stop) stop; exit 0 ;;
  local | blob) ;;
  *) echo "usage: scripts/quickstart.sh [blob|local|stop]" >&2; exit 2 ;;
esac
if [ -e "$DEMO" ]; then
  echo "a previous demo is in $DEMO: removing it first"
  stop >/dev/null
fi

[ "${QUICKSTART_SKIP_INSTALL:-}" = 1 ] || bash scripts/install-deps.sh
mkdir -p "$DEMO"
if [ "${1:-blob}" = local ]; then
  local_demo
  exit 0
fi

say "Azurite (Azure Blob emulator, in memory) on 127.0.0.1"
PORT=$("${HELPER[@]}" free-port)
ENDPOINT=http://127.0.0.1:$PORT/devstoreaccount1
setsid azurite-blob --blobHost 127.0.0.1 --blobPort "$PORT" --inMemoryPersistence \
  --skipApiVersionCheck --loose --disableProductStyleUrl --disableTelemetry --silent \
  >"$DEMO/azurite.log" 2>&1 </dev/null &
echo $! > "$DEMO/azurite.pid"
"${HELPER[@]}" wait-http "$ENDPOINT"
echo "$ENDPOINT"

say "a demo dataset: small images in class folders and one larger shard"
"${HELPER[@]}" make "$DEMO_SHOWN/dataset"

say "register container 'demo' as datastore 'demo' (registry: ${DSMOUNT_REGISTRY#"$ROOT"/})"
"${DSMOUNT[@]}" datastore register-blob demo --account devstoreaccount1 --container demo \
  --endpoint "$ENDPOINT" --account-key-env DEMO_ACCOUNT_KEY --create-if-not-exists
"${DSMOUNT[@]}" upload demo "$DEMO/dataset" --quiet
echo "uploaded $DEMO_SHOWN/dataset to container demo"

say "version 1 of it (immutable; small files packed, with a manifest)"
"${DSMOUNT[@]}" datastore create demo "$DEMO/dataset" --quiet
"${DSMOUNT[@]}" datastore versions demo

say "the daemon on $SHOWN; attach version 1, and the container as it is now"
start_daemon
"${DSMOUNT[@]}" attach demo --version 1
# A name is either versioned or not, so the live container gets a name of its own.
"${DSMOUNT[@]}" attach demo-live --blob --container demo --endpoint "$ENDPOINT" \
  --account devstoreaccount1 --account-key-env DEMO_ACCOUNT_KEY
"${DSMOUNT[@]}" list
(cd "$MNT" && ls -- . demo demo/1 demo-live)

say "a training-style loop over demo/1: shuffled reads, every byte checked"
"${HELPER[@]}" train "$SHOWN/demo/1" "$DEMO/dataset.sha256.json" --epochs 2
say "the live container, demo-live/, read once"
"${HELPER[@]}" verify "$SHOWN/demo-live" "$DEMO/dataset.sha256.json"

say "dsmount status"
"${DSMOUNT[@]}" status

cat <<'MSG'

== try next
  export DSMOUNT_SOCKET=$PWD/demo/control.sock DSMOUNT_REGISTRY=$PWD/demo/registry
  ls demo/datastores/demo/1/train/cat | head     # plain files, for any program
  .venv/bin/dsmount doctor                       # check the node and every datastore
  .venv/bin/dsmount run --mount demo:1/train -- ls {demo}
  .venv/bin/dsmount datastore create demo demo/dataset && \
    .venv/bin/dsmount attach demo --version 2    # an immutable version 2
  scripts/quickstart.sh stop                     # stop it all, delete ./demo
MSG
