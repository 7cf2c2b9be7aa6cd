#!/usr/bin/env bash
# Install dsmount as a systemd service on this node (or into an image root with --root).
#
# Safe to run again: the venv is upgraded in place, the unit and tmpfiles rule are refreshed,
# and an existing /etc/dsmount/dsmount.toml is never overwritten (the admin owns it).
#
# What it does:
#   /opt/dsmount/                     venv with dsmount installed from this checkout (pip)
#   /usr/local/bin/dsmount            symlink to /opt/dsmount/bin/dsmount (the unit's ExecStart)
#   /etc/systemd/system/dsmount.service
#   /etc/dsmount/dsmount.toml         example config, mode 0640, only if absent
#   /etc/tmpfiles.d/dsmount-jupyter.conf   /home/jovyan/datastores -> /datastores (see
#                                     --jupyter-link; only where a jovyan user has a home)
#   /datastores                       the mountpoint
# then, only where systemd is running: systemctl daemon-reload, systemd-tmpfiles --create,
# and with --enable: systemctl enable --now dsmount.
#
# pyfuse3 builds from source: the node needs libfuse3-dev pkg-config gcc python3-dev python3-venv
# (apt-get install them first) and fuse3 at run time.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV=/opt/dsmount
USE_VENV=1
BIN=""
ROOT=""
JUPYTER_LINK=auto
ENABLE=0
BIN_LINK=/usr/local/bin/dsmount # must match ExecStart= in systemd/dsmount.service

say() { printf '[install-service] %s\n' "$*"; }
die() {
    printf '[install-service] ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
Usage: $0 [options]
  --venv DIR           venv to install dsmount into (default /opt/dsmount)
  --no-venv            do not create a venv; link the dsmount already installed
                       (found on PATH, or given with --bin)
  --bin PATH           with --no-venv: the dsmount executable to link to ${BIN_LINK}
  --root DIR           install into another root (image build, tests): paths are inside DIR,
                       systemctl is not called; needs --no-venv and --bin (a venv cannot move)
  --jupyter-link MODE  auto|yes|no: install the tmpfiles.d rule linking
                       /home/jovyan/datastores (auto: only if user jovyan has a home dir)
  --enable             also run: systemctl enable --now dsmount
  -h, --help           this text
EOF
}

while (($#)); do
    case "$1" in
    --venv)
        VENV="${2:?--venv needs a directory}"
        shift 2
        ;;
    --no-venv)
        USE_VENV=0
        shift
        ;;
    --bin)
        BIN="${2:?--bin needs a path}"
        shift 2
        ;;
    --root)
        ROOT="${2:?--root needs a directory}"
        shift 2
        ;;
    --jupyter-link)
        JUPYTER_LINK="${2:?--jupyter-link needs auto, yes or no}"
        shift 2
        ;;
    --enable)
        ENABLE=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown option: $1"
        ;;
    esac
done

case "$JUPYTER_LINK" in auto | yes | no) ;; *) die "--jupyter-link must be auto, yes or no" ;; esac
if [[ -n "$ROOT" ]]; then
    [[ -d "$ROOT" ]] || die "--root $ROOT is not a directory"
    ROOT="$(cd "$ROOT" && pwd)"
    [[ "$ROOT" == / ]] && ROOT=""
fi
if [[ -n "$ROOT" ]] && ((USE_VENV)); then
    die "--root needs --no-venv --bin PATH: a venv built at $ROOT$VENV would not work at $VENV"
fi
if [[ -z "$ROOT" && "$(id -u)" != 0 ]]; then
    die "run as root (or use --root DIR to stage the files somewhere else)"
fi

# Copy src to ROOT+dest with the mode, saying whether anything changed.
install_file() {
    local src="$1" dest="$ROOT$2" mode="$3"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        say "unchanged: $2"
    else
        install -D -m "$mode" "$src" "$dest"
        say "installed: $2"
    fi
}

# --- dsmount itself -------------------------------------------------------------------------
if ((USE_VENV)); then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "python3 >= 3.11 is required (found: $(python3 -V 2>&1 || echo none))"
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating venv $VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    fi
    say "pip install $REPO_ROOT into $VENV"
    # Not editable: the service must not depend on this checkout staying where it is. Build from
    # a copy so the checkout gets no build/ litter (and may be read-only).
    src="$(mktemp -d)"
    pip_log="$src.log"
    tar -C "$REPO_ROOT" --exclude=./.git --exclude=./.venv --exclude=./build -cf - . \
        | tar -C "$src" -xf -
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
        "$src" >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -rf "$src" "$pip_log"
        die "pip install failed (pyfuse3 needs: apt-get install libfuse3-dev pkg-config gcc python3-dev)"
    fi
    rm -rf "$src" "$pip_log"
    [[ -f "$REPO_ROOT/README.md" ]] && install -m 0644 "$REPO_ROOT/README.md" "$VENV/README.md"
    BIN="$VENV/bin/dsmount"
elif [[ -z "$BIN" ]]; then
    [[ -z "$ROOT" ]] || die "--root needs --bin PATH (the dsmount executable inside the root)"
    BIN="$(command -v dsmount || true)"
    [[ -n "$BIN" ]] || die "--no-venv: no dsmount on PATH; pass --bin PATH"
fi
[[ -x "$ROOT$BIN" ]] || die "$ROOT$BIN is not an executable"

link="$ROOT$BIN_LINK"
if [[ -L "$link" && "$(readlink "$link")" == "$BIN" ]]; then
    say "unchanged: $BIN_LINK -> $BIN"
elif [[ "$(realpath -m "$ROOT$BIN")" == "$(realpath -m "$link")" ]]; then
    say "unchanged: $BIN_LINK is the dsmount executable"
elif [[ -e "$link" && ! -L "$link" ]]; then
    die "$BIN_LINK exists and is not a symlink; remove it or use --no-venv --bin $BIN_LINK"
else
    mkdir -p "$(dirname "$link")"
    ln -sfn "$BIN" "$link"
    say "linked: $BIN_LINK -> $BIN"
fi

# --- unit, config, mountpoint -----------------------------------------------------------------
# The unit is ours: refresh it every time. Local changes belong in a drop-in
# (systemctl edit dsmount), which survives this.
install_file "$REPO_ROOT/systemd/dsmount.service" /etc/systemd/system/dsmount.service 0644

if [[ -e "$ROOT/etc/dsmount/dsmount.toml" ]]; then
    say "kept existing: /etc/dsmount/dsmount.toml"
else
    install -d -m 0755 "$ROOT/etc/dsmount"
    install -m 0640 "$REPO_ROOT/systemd/dsmount.toml" "$ROOT/etc/dsmount/dsmount.toml"
    say "installed: /etc/dsmount/dsmount.toml (example; edit it, then systemctl restart dsmount)"
fi

if [[ ! -d "$ROOT/datastores" ]]; then
    install -d -m 0755 "$ROOT/datastores"
    say "created: /datastores"
fi

# --- Jupyter home link ------------------------------------------------------------------------
jovyan_home() {
    local entry
    if [[ -n "$ROOT" ]]; then
        entry="$(grep -E '^jovyan:' "$ROOT/etc/passwd" 2>/dev/null || true)"
    else
        entry="$(getent passwd jovyan || true)"
    fi
    [[ -n "$entry" ]] && printf '%s\n' "$entry" | cut -d: -f6
}

tmpfiles_installed=0
if [[ "$JUPYTER_LINK" == no ]]; then
    say "skipped: /etc/tmpfiles.d/dsmount-jupyter.conf (--jupyter-link no)"
else
    home="$(jovyan_home || true)"
    # systemd-tmpfiles would create a missing /home/jovyan itself, owned by root, which would
    # break that user's home later: in auto mode only install the rule where the home exists.
    if [[ "$JUPYTER_LINK" == yes ]] || [[ "$home" == /home/jovyan && -d "$ROOT$home" ]]; then
        install_file "$REPO_ROOT/systemd/dsmount-jupyter.conf" \
            /etc/tmpfiles.d/dsmount-jupyter.conf 0644
        tmpfiles_installed=1
    else
        say "skipped: /etc/tmpfiles.d/dsmount-jupyter.conf (no user jovyan with home" \
            "/home/jovyan here; use dsmount link-home or --jupyter-link yes)"
    fi
fi

# --- systemd ------------------------------------------------------------------------------------
if [[ -n "$ROOT" ]]; then
    say "staged into $ROOT: systemctl not called"
elif [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    say "ran: systemctl daemon-reload"
    if ((tmpfiles_installed)); then
        systemd-tmpfiles --create /etc/tmpfiles.d/dsmount-jupyter.conf
        say "ran: systemd-tmpfiles --create /etc/tmpfiles.d/dsmount-jupyter.conf"
    fi
    if ((ENABLE)); then
        systemctl enable --now dsmount.service
        say "ran: systemctl enable --now dsmount.service"
    else
        say "next: edit /etc/dsmount/dsmount.toml, then: systemctl enable --now dsmount"
    fi
else
    say "systemd is not running here: skipped daemon-reload, systemd-tmpfiles and enable"
fi
say "done"
