"""Link a user's home to the datastores: ~/datastores -> /datastores (`dsmount link-home`).

Jupyter shows only the user's home directory, so the mount is made reachable through a symlink
there. This runs as root (a spawner hook, a container start hook, an admin) inside a directory
the user controls, so:

Invariants:
- Idempotent: a link already pointing at the target is left alone (its owner is corrected).
- Never destroys user data: a real directory or file, or a symlink pointing elsewhere, is refused
  with AlreadyExists. `force` replaces a foreign symlink, an empty directory or an empty file;
  a non-empty directory or file is refused even then.
- Never follows a link it did not create while acting as root: every step works on names
  relative to an fd of the home directory, and the owner is applied to the inode just checked
  to be a symlink (fchownat with AT_EMPTY_PATH), so swapping the name for a hard link to another
  file cannot redirect the chown.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import os
import pwd
import stat
from pathlib import Path

from dsmount.errors import AlreadyExists, NotFound

_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
# A concurrent writer can recreate the name between our check and our change; after this many
# rounds we give up instead of looping forever.
_ATTEMPTS = 3


class LinkOutcome(enum.Enum):
    """What `link_home` did."""

    CREATED = "created"
    ALREADY_LINKED = "already linked"
    REPLACED = "replaced"


def home_of(user: str) -> tuple[Path, int, int]:
    """(home directory, uid, gid) of `user` from the password database."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise NotFound(f"no such user: {user!r}") from None
    return Path(pw.pw_dir), pw.pw_uid, pw.pw_gid


def link_home(
    home: Path,
    target: Path = Path("/datastores"),
    *,
    name: str = "datastores",
    owner: tuple[int, int] | None = None,
    force: bool = False,
) -> LinkOutcome:
    """Make `home/name` a symlink to `target`; `owner` (uid, gid) is applied to the link."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid link name: {name!r}")
    link = Path(home) / name
    try:
        dir_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"home directory {home} does not exist") from None
    except NotADirectoryError:
        raise NotFound(f"home directory {home} is not a directory") from None
    try:
        for _ in range(_ATTEMPTS):
            outcome = _link_once(dir_fd, link, name, str(target), owner, force)
            if outcome is not None:
                return outcome
        raise AlreadyExists(f"{link} keeps changing while we link it; try again")
    finally:
        os.close(dir_fd)


def _link_once(
    dir_fd: int, link: Path, name: str, target: str, owner: tuple[int, int] | None, force: bool
) -> LinkOutcome | None:
    """One attempt; None means the name changed under us and the caller should look again."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return LinkOutcome.CREATED if _create(dir_fd, link, name, target, owner) else None

    if stat.S_ISLNK(st.st_mode):
        try:
            current = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL):
                return None  # removed, or no longer a symlink, since lstat: look again
            raise
        if _same_target(link.parent, current, target):
            if owner is not None:
                _chown_link(dir_fd, link, name, owner)
            return LinkOutcome.ALREADY_LINKED
        if not force:
            raise AlreadyExists(
                f"{link} already exists and points to {current}, not {target}; "
                "use --force to replace that symlink"
            )
        _unlink(dir_fd, name)
    elif stat.S_ISDIR(st.st_mode):
        if not force:
            raise AlreadyExists(
                f"{link} is a real directory; move it away (or use --force if it is empty)"
            )
        try:
            os.rmdir(name, dir_fd=dir_fd)  # only ever removes an empty directory
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise AlreadyExists(
                f"{link} is a directory with files in it; refusing to replace it even with "
                "--force, because that would delete the user's data. Move its contents away "
                "first."
            ) from None
    elif stat.S_ISREG(st.st_mode):
        if not force:
            raise AlreadyExists(
                f"{link} is a regular file; move it away (or use --force if it is empty)"
            )
        if st.st_size != 0:
            raise AlreadyExists(
                f"{link} is a file with data in it; refusing to replace it even with --force, "
                "because that would delete the user's data. Move it away first."
            )
        _unlink(dir_fd, name)
    else:
        raise AlreadyExists(f"{link} exists and is not a symlink, directory or regular file")

    return LinkOutcome.REPLACED if _create(dir_fd, link, name, target, owner) else None


def _create(dir_fd: int, link: Path, name: str, target: str, owner: tuple[int, int] | None) -> bool:
    """Create the symlink; False if the name appeared meanwhile (the caller looks again)."""
    try:
        os.symlink(target, name, dir_fd=dir_fd)
    except FileExistsError:
        return False
    if owner is not None:
        _chown_link(dir_fd, link, name, owner)
    return True


def _unlink(dir_fd: int, name: str) -> None:
    # Someone removing it first is fine: we create the link next either way.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _same_target(base: Path, current: str, target: str) -> bool:
    """Whether a link reading `current` (relative to `base` if relative) points at `target`."""
    return os.path.normpath(os.path.join(base, current)) == os.path.normpath(
        os.path.join(base, target)
    )


def _chown_link(dir_fd: int, link: Path, name: str, owner: tuple[int, int]) -> None:
    uid, gid = owner
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISLNK(st.st_mode):
            raise AlreadyExists(f"{link} was replaced by something else while we linked it")
        if (st.st_uid, st.st_gid) != (uid, gid):
            _fchownat_empty(fd, uid, gid, link)
    finally:
        os.close(fd)


def _fchownat_empty(fd: int, uid: int, gid: int, link: Path) -> None:
    """fchownat(fd, "", uid, gid, AT_EMPTY_PATH): chown exactly the inode `fd` refers to.
    os.chown cannot pass AT_EMPTY_PATH, hence ctypes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fchownat.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_int,
    ]
    rc = libc.fchownat(fd, b"", uid, gid, _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(link))
