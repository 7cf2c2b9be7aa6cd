"""Mounting a FUSE filesystem without libfuse, for the direct transport: as root with
mount(2) on a /dev/fuse descriptor of our own; otherwise through the setuid `fusermount3`,
which passes the descriptor back over a socket (its `_FUSE_COMMFD` protocol, as libfuse uses).

Options are the pyfuse3/libfuse names the daemon already passes (`fsname=`, `subtype=`,
`allow_other`, `default_permissions`, `noatime`, `ro`); nosuid and nodev always hold.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess

from dsmount.errors import ConfigError
from dsmount.node.mountpoint import lazy_unmount

_LIBC = ctypes.CDLL(None, use_errno=True)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOATIME = 1, 2, 4, 1024
_FLAG_OPTIONS = {"ro": _MS_RDONLY, "noatime": _MS_NOATIME}
_DATA_OPTIONS = ("allow_other", "default_permissions")


def _named(options: set[str], key: str, default: str) -> str:
    for option in options:
        if option.startswith(key + "="):
            return option.split("=", 1)[1]
    return default


def mount_fuse(mountpoint: str, options: set[str]) -> int:
    """Mount a FUSE filesystem at `mountpoint`; the /dev/fuse descriptor serving it."""
    known = set(_FLAG_OPTIONS) | set(_DATA_OPTIONS)
    unknown = {o for o in options if "=" not in o and o not in known}
    if unknown:
        raise ConfigError(f"FUSE mount options not understood: {sorted(unknown)}")
    if os.geteuid() == 0:
        return _mount_root(mountpoint, options)
    return _mount_fusermount(mountpoint, options)


def _mount_root(mountpoint: str, options: set[str]) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    fsname = _named(options, "fsname", "dsmount")
    subtype = _named(options, "subtype", fsname)
    flags = _MS_NOSUID | _MS_NODEV
    for option, bit in _FLAG_OPTIONS.items():
        if option in options:
            flags |= bit
    data = ",".join([f"fd={fd}", "rootmode=40000", f"user_id={os.geteuid()}",
                     f"group_id={os.getegid()}", *sorted(o for o in _DATA_OPTIONS
                                                         if o in options)])
    if _LIBC.mount(fsname.encode(), os.fsencode(mountpoint), f"fuse.{subtype}".encode(),
                   flags, data.encode()) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise ConfigError(f"cannot mount FUSE at {mountpoint}: {os.strerror(err)}")
    return fd


def _mount_fusermount(mountpoint: str, options: set[str]) -> int:
    tool = shutil.which("fusermount3")
    if tool is None:
        raise ConfigError("mounting as a user needs fusermount3 (package fuse3)")
    opts = sorted(options)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        proc = subprocess.run([tool, "-o", ",".join(opts), "--", mountpoint], env=env,
                              pass_fds=(theirs.fileno(),), capture_output=True, text=True,
                              timeout=60, check=False)
        if proc.returncode != 0:
            raise ConfigError(f"cannot mount FUSE at {mountpoint}: {proc.stderr.strip()}")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise ConfigError(f"cannot mount FUSE at {mountpoint}: fusermount3 sent no descriptor")
    os.set_inheritable(fds[0], False)
    return fds[0]


def unmount_fuse(mountpoint: str) -> None:
    """Detach the mount (lazily: a process still inside it keeps working until it leaves)."""
    if os.geteuid() == 0 and _LIBC.umount2(os.fsencode(mountpoint), 2) == 0:  # MNT_DETACH
        return
    lazy_unmount(mountpoint)
