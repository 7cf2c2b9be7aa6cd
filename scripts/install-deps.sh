#!/usr/bin/env bash
# Install everything dsmount and its tests need on a fresh Debian 12 machine.
#
# Idempotent: every step first checks whether it is already done and skips fast, so a warm
# re-run takes a second or two. Runs as root; uses sudo only when not root.
#
# Steps: Debian packages (FUSE, build tools for pyfuse3, rclone for the benchmark, rsync for
# the write tests, systemd for `systemd-analyze verify` / `systemd-tmpfiles` in tests, node+npm
# only when missing), Azurite
# from npm, /dev/fuse + user_allow_other, then the project venv `.venv` with
# `.[test,dataframe,torch]` (the optional dataframe helpers and the DataLoader sampler
# wrapper are tested too; torch is the CPU wheel, a few hundred MB).
set -euo pipefail

# Azurite 3.36+ requires Node >= 21; Debian 12 ships Node 18. 3.35.x is the newest that runs on
# both (engines: node >= 10), so pin it rather than let a fresh machine pick an incompatible one.
AZURITE_SPEC="azurite@3.35.0"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
export DEBIAN_FRONTEND=noninteractive

say() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "not root and sudo is not installed"
fi
as_root() { "${SUDO[@]}" "$@"; }

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# --- Debian packages -----------------------------------------------------------------------
wanted=(fuse3 libfuse3-dev pkg-config gcc rclone systemd rsync)
if ! command -v python3 >/dev/null 2>&1; then
    wanted+=(python3)
fi
# Debian's python3 lacks ensurepip (venv) and Python.h (pyfuse3 ships only an sdist) unless
# python3-venv / python3-dev are installed; a python3 from elsewhere (pyenv) has both.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    wanted+=(python3-venv)
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c '
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
' 2>/dev/null; then
    wanted+=(python3-dev)
fi
# Node may come from elsewhere (e.g. NodeSource, which bundles npm): only install Debian's when
# the commands are missing, so we never fight another node installation.
if ! command -v node >/dev/null 2>&1; then
    wanted+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
    wanted+=(npm)
fi

missing=()
for pkg in "${wanted[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "apt-get install: ${missing[*]}"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "Debian packages: already installed"
fi

# --- Azurite ------------------------------------------------------------------------------
if command -v azurite-blob >/dev/null 2>&1 && command -v azurite >/dev/null 2>&1; then
    say "azurite: already installed ($(command -v azurite-blob))"
else
    say "npm install -g $AZURITE_SPEC"
    as_root npm install -g --no-fund --no-audit --loglevel=error "$AZURITE_SPEC" >/dev/null
    # A non-default npm prefix may put the bin dir off PATH: say so clearly.
    command -v azurite-blob >/dev/null 2>&1 \
        || die "azurite-blob not on PATH after install; add \$(npm prefix -g)/bin to PATH"
fi

# --- FUSE device and config -----------------------------------------------------------------
if [[ ! -e /dev/fuse ]]; then
    say "/dev/fuse missing: trying modprobe fuse"
    as_root modprobe fuse 2>/dev/null || true
    if [[ ! -e /dev/fuse ]]; then
        # In a container modprobe is often absent; the device may still be creatable.
        as_root mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
    fi
    [[ -e /dev/fuse ]] || say "WARNING: /dev/fuse is unavailable; mount tests will skip/fail"
fi
# allow_other from a non-root daemon needs user_allow_other in /etc/fuse.conf.
if ! grep -Eq '^[[:space:]]*user_allow_other' /etc/fuse.conf 2>/dev/null; then
    say "enabling user_allow_other in /etc/fuse.conf"
    echo "user_allow_other" | as_root tee -a /etc/fuse.conf >/dev/null
fi

# --- Python venv ------------------------------------------------------------------------------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 on PATH is $(python3 -V 2>&1); dsmount needs >= 3.11"
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating venv $VENV"
    python3 -m venv "$VENV"
fi
# Reinstall only when pyproject.toml changed since the last successful install (or the
# packages are not importable), because `pip install -e` costs several seconds even when
# everything is satisfied.
stamp="$VENV/.dsmount-deps.sha256"
want_hash="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_hash" ]] && [[ -x "$VENV/bin/ruff" ]] \
    && "$VENV/bin/python" -c 'import dsmount, pyfuse3, trio, pytest, azure.storage.blob, pandas, torch' \
        2>/dev/null; then
    say "venv: up to date"
else
    say "pip install -e '.[test,dataframe,torch]' into .venv (torch: the CPU wheel, for the DataLoader tests)"
    # The build backend is chatty on stderr (deprecation notices): keep the output in a log and
    # show it only when the install fails.
    pip_log="$(mktemp)"
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -e "$REPO_ROOT[test,dataframe,torch]" >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        die "pip install failed"
    fi
    rm -f "$pip_log"
    echo "$want_hash" >"$stamp"
fi

say "done"
