"""The node's side of `dsmount doctor`: look at this machine and judge it (rules in
`dsmount.node.doctor`).

What the daemon is serving (mountpoint, socket, state directory, cache and staging directories,
memory budget) comes from its `status` when it answers - it is the authority on its own
settings - and otherwise from the same config the daemon would load (`NodeView`). The memory
limit is read for the daemon's cgroup (/proc/PID/cgroup), not this command's, because a
systemd service or a container pod usually has one of its own.

Invariants:
- Read-only: nothing here changes the machine; fixes are only named.
- Bounded: a hung mount cannot hang the report (statvfs runs in a thread with a deadline).
- Needs no credential and reads no secret (a secrets file's mode is checked, never its text).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsmount.errors import DsmountError
from dsmount.node import mountpoint as mp
from dsmount.node.config import Config
from dsmount.node.doctor import (
    Check,
    check_allow_other,
    check_free_space,
    check_fuse_device,
    check_fusermount,
    check_memory,
    check_mountpoint,
    check_owned_path,
)
from dsmount.node.memory_limit import choose_budget, effective_limit
from dsmount.node.state import SECRETS_FILE

STATVFS_DEADLINE = 5.0


@dataclass(frozen=True)
class Area:
    """A directory that grows up to a budget: the disk cache or the write staging area."""

    path: str
    budget: int
    used: int = 0


@dataclass(frozen=True)
class NodeView:
    """What the daemon serves, as far as the node checks need it."""

    socket: str
    mountpoint: str
    state_dir: str
    pid: int | None = None
    budget: int | None = None
    budget_error: str | None = None  # the config's budget cannot even be chosen
    disk: Area | None = None
    staging: Area | None = None


def _area(d: Any) -> Area | None:
    if not isinstance(d, dict) or not d.get("dir"):
        return None
    return Area(str(d["dir"]), int(d.get("budget_bytes") or 0), int(d.get("used_bytes") or 0))


def view_from_status(status: dict[str, Any], socket: str) -> NodeView:
    """The view of a daemon that answered `status`."""
    memory = status.get("memory") or {}
    return NodeView(
        socket=str(status.get("socket") or socket),
        mountpoint=str(status.get("mountpoint")),
        state_dir=str(status.get("state_dir") or ""),
        pid=status.get("pid"),
        budget=memory.get("budget_bytes"),
        disk=_area(status.get("disk_cache")),
        staging=_area(status.get("staging")) if status.get("writes_enabled") else None,
    )


def view_from_config(config: Config, socket: str, pid: int | None = None) -> NodeView:
    """The view a daemon started with `config` would have (it does not answer)."""
    from dsmount.node.daemon import write_settings

    c = config
    budget: int | None = None
    error = None
    try:
        budget = choose_budget(c.cache.memory_budget, c.cache.block_size,
                               effective_limit(proc_cgroup=_cgroup_text(pid))).budget
    except DsmountError as e:
        error = str(e)
    disk = Area(os.path.abspath(c.cache.disk_dir), c.cache.disk_budget) if c.cache.disk_dir \
        else None
    staging = (Area(write_settings(c).staging_dir, c.writes.staging_budget)
               if c.writes.enabled else None)
    return NodeView(socket=socket, mountpoint=os.path.abspath(c.daemon.mountpoint),
                    state_dir=os.path.abspath(c.daemon.state_dir), pid=pid, budget=budget,
                    budget_error=error, disk=disk, staging=staging)


# -- facts ----------------------------------------------------------------------------------------
def _cgroup_text(pid: int | None) -> str | None:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid or 'self'}/cgroup").read_text()
    return None


def daemon_uid(view: NodeView) -> int:
    """Who the daemon runs as: its process's owner, else its socket's, else ours."""
    for path in (f"/proc/{view.pid}" if view.pid else None, view.socket):
        if path:
            with contextlib.suppress(OSError):
                return os.stat(path).st_uid
    return os.getuid()


def statvfs_errno(path: str, deadline: float = STATVFS_DEADLINE) -> tuple[bool, int | None]:
    """(answered within the deadline, errno of the failure or None)."""
    result: list[int | None] = []

    def run() -> None:
        try:
            os.statvfs(path)
            result.append(None)
        except OSError as e:
            result.append(e.errno)

    thread = threading.Thread(target=run, daemon=True)  # a hung mount strands only this
    thread.start()
    thread.join(deadline)
    return (True, result[0]) if result else (False, None)


def free_bytes(path: str) -> tuple[str, int]:
    """(the nearest existing directory at or above `path`, its filesystem's free bytes)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return str(p), st.f_bavail * st.f_frsize


def jupyter_links(mountpoint: str, home_root: str = "/home",
                  tmpfiles: str = "/etc/tmpfiles.d") -> list[str]:
    """Where Jupyter users are linked to the mount: tmpfiles.d rules naming it, the
    docker-stacks start hook, and ~/datastores links pointing at it."""
    found: list[str] = []
    for conf in sorted(glob.glob(os.path.join(tmpfiles, "*.conf"))):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in Path(conf).read_text().splitlines():
                fields = line.split()
                if len(fields) >= 7 and fields[0].startswith("L") and fields[6] == mountpoint:
                    found.append(conf)
                    break
    found += sorted(glob.glob("/usr/local/bin/before-notebook.d/*dsmount*"))
    for link in sorted(glob.glob(os.path.join(home_root, "*", "datastores"))):
        with contextlib.suppress(OSError):
            if os.readlink(link).rstrip("/") == mountpoint.rstrip("/"):
                found.append(link)
    return found


def _owned(name: str, path: str, uid: int, private_bits: int, kind: str,
           is_kind: Callable[[int], bool]) -> Check:
    try:
        st = os.lstat(path)
    except OSError:
        return check_owned_path(name, path, exists=False, kind_ok=False, uid=-1, mode=0,
                                daemon_uid=uid, private_bits=private_bits, kind=kind)
    return check_owned_path(name, path, exists=True, kind_ok=is_kind(st.st_mode),
                            uid=st.st_uid, mode=st.st_mode, daemon_uid=uid,
                            private_bits=private_bits, kind=kind)


def _fuse_checks(root: bool, uid: int, device: str) -> list[Check]:
    try:
        st = os.stat(device)
        exists, is_char = True, stat.S_ISCHR(st.st_mode)
        mode = st.st_mode
        usable = root or (mode & 0o006 == 0o006) or (st.st_uid == uid and mode & 0o600 == 0o600)
    except OSError:
        exists = is_char = usable = False
    tool = shutil.which("fusermount3")
    setuid = False
    if tool:
        with contextlib.suppress(OSError):
            st = os.stat(tool)
            setuid = st.st_uid == 0 and bool(st.st_mode & stat.S_ISUID)
    return [check_fuse_device(device, exists, is_char, usable),
            check_fusermount(tool, setuid, root)]


def node_checks(view: NodeView, daemon_answers: bool, *, device: str = "/dev/fuse",
                fuse_conf: str = "/etc/fuse.conf") -> list[Check]:
    """Every node check, in the order an operator would look."""
    uid = daemon_uid(view)
    root = uid == 0
    checks = _fuse_checks(root, uid, device)
    try:
        conf_text: str | None = Path(fuse_conf).read_text()
    except OSError:
        conf_text = None
    checks.append(check_allow_other(conf_text, root, jupyter_links(view.mountpoint)))

    info = mp.find_mount(view.mountpoint)
    answered, err = statvfs_errno(view.mountpoint) if info else (True, None)
    checks.append(check_mountpoint(view.mountpoint, info.fstype if info else None, err,
                                   answered, daemon_answers))

    checks.append(_owned("socket", view.socket, uid, 0o007, "socket", stat.S_ISSOCK))
    if view.state_dir:
        checks.append(_owned("state directory", view.state_dir, uid, 0o077, "directory",
                             stat.S_ISDIR))
        secrets = os.path.join(view.state_dir, SECRETS_FILE)
        if os.path.lexists(secrets):
            checks.append(_owned("secrets file", secrets, uid, 0o077, "regular file",
                                 stat.S_ISREG))

    if view.budget_error is not None:
        checks.append(Check("memory", "cache budget", "error", view.budget_error,
                            "lower [cache] memory_budget, or raise the memory limit"))
    elif view.budget is not None:
        limit = effective_limit(proc_cgroup=_cgroup_text(view.pid))
        checks.append(check_memory(view.budget, limit.bytes, limit.describe()))

    for name, area in (("disk cache", view.disk), ("staging", view.staging)):
        if area is not None:
            try:
                _, free = free_bytes(area.path)
            except OSError as e:
                checks.append(Check(name, area.path, "error", f"cannot read: {e.strerror}",
                                    "check the directory and its filesystem"))
                continue
            checks.append(check_free_space(name, area.path, free, area.budget, area.used))
    return checks

