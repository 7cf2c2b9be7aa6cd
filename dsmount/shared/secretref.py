"""Resolve a secret reference ({"env": VAR} or {"file": PATH}) to its value.

Secrets never need to be on a command line: the CLI and the config name where a secret lives.
A file holding a secret is refused if group- or world-readable, as ssh does for keys.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from dsmount.errors import ConfigError, InvalidRequest


def check_private(path: str) -> None:
    """Refuse a secret-holding file others can read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidRequest(f"secret file {path} does not exist") from None
    except OSError as e:
        raise InvalidRequest(f"secret file {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} holds a secret but is accessible by group/others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )


def read_secret_file(path: str) -> str:
    check_private(path)
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError as e:
        raise InvalidRequest(f"cannot read secret file {path}: {e.strerror}") from None
    if not value:
        raise InvalidRequest(f"secret file {path} is empty")
    return value


def read_secret_env(name: str, environ: Any = None) -> str:
    value = ((environ if environ is not None else os.environ).get(name) or "").strip()
    if not value:
        raise InvalidRequest(f"environment variable {name} is not set (or empty)")
    return value


def resolve(ref: dict[str, Any]) -> str:
    if "env" in ref:
        return read_secret_env(str(ref["env"]))
    if "file" in ref:
        return read_secret_file(str(ref["file"]))
    raise InvalidRequest("a secret reference needs 'env' or 'file'")
