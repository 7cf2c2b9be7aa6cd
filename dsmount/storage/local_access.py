"""Who may read what on local disk: POSIX mode bits and access ACLs, evaluated in userspace.

Two uses, both about a daemon running as root that must not read on anyone's behalf more than
they could read themselves:
- `may` answers whether a user (uid + groups) may search/read a file, exactly as the kernel
  would (owner, named users, owning and named groups under the mask, others); `check_listable`
  walks a path with it as that user, so an attach request is checked against its requester,
  race-free (one descriptor per step) and naming the directory checked by device and inode;
- `presented_bits` turns a file's ACL into the nine mode bits the mount shows. A FUSE mount with
  `default_permissions` checks only those bits, so an ACL's named entries cannot be expressed:
  the bits shown for the owning group and for others are never more than any named entry
  grants (a user the ACL singles out is never better off through the mount), and the access
  named entries grant is lost through the mount. Conservative by construction.

The ACL is read from the `system.posix_acl_access` extended attribute (the kernel's binary
form: a 4-byte version, then 8-byte entries of tag, permissions, id).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections import deque
from dataclasses import dataclass

from dsmount.errors import NotFound, PermissionDenied, from_oserror

ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ENTRY = struct.Struct("<HHI")

R, W, X = 4, 2, 1


@dataclass(frozen=True)
class Acl:
    """An access ACL, as the kernel evaluates it."""

    user_obj: int
    group_obj: int
    other: int
    mask: int | None = None
    users: tuple[tuple[int, int], ...] = ()  # (uid, permissions)
    groups: tuple[tuple[int, int], ...] = ()  # (gid, permissions)


def parse_acl(raw: bytes) -> Acl | None:
    """The ACL in a `system.posix_acl_access` value; None if it is not one we understand."""
    if len(raw) < 4 or (len(raw) - 4) % _ENTRY.size:
        return None
    if struct.unpack_from("<I", raw)[0] != _ACL_VERSION:
        return None
    user_obj = group_obj = other = -1
    mask: int | None = None
    users: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    for tag, perm, ident in _ENTRY.iter_unpack(raw[4:]):
        perm &= 7
        if tag == _USER_OBJ:
            user_obj = perm
        elif tag == _GROUP_OBJ:
            group_obj = perm
        elif tag == _OTHER:
            other = perm
        elif tag == _MASK:
            mask = perm
        elif tag == _USER:
            users.append((ident, perm))
        elif tag == _GROUP:
            groups.append((ident, perm))
        else:
            return None
    if min(user_obj, group_obj, other) < 0:
        return None
    return Acl(user_obj, group_obj, other, mask, tuple(users), tuple(groups))


def read_acl(path: str, *, follow: bool) -> Acl | None | bool:
    """The access ACL of `path`: None if it has none; False if it could not be read or
    understood (callers then assume the worst). `follow` must be True for "/proc/self/fd/N"
    (the magic link names the object) and False for a name inside a directory fd."""
    try:
        # Listing the names first: most files have no ACL, and a missing attribute costs an
        # exception (twice the time of this call) on every entry of a big listing.
        if ACL_XATTR not in os.listxattr(path, follow_symlinks=follow):
            return None
        raw = os.getxattr(path, ACL_XATTR, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        return False
    acl = parse_acl(raw)
    return False if acl is None else acl


def presented_bits(mode: int, acl: Acl | None | bool) -> int:
    """The nine permission bits the mount shows for a file with `mode` and `acl` (see the
    module docstring). Without an ACL they are the file's own."""
    bits = mode & 0o777
    if acl is None:
        return bits
    if acl is False:
        return bits & 0o700  # an ACL we cannot read: only the owner, whose bits are exact
    mask = 7 if acl.mask is None else acl.mask
    group = acl.group_obj & mask
    other = acl.other
    for _, perm in acl.users:
        # A named user directly gets `perm & mask`; through the mount they fall into the
        # owning group or the others, so neither may show more.
        group &= perm & mask
        other &= perm & mask
    for _, perm in acl.groups:
        # A member of a named group (and of no other matching one) gets `perm & mask` and
        # never the other bits; through the mount they are "others".
        other &= perm & mask
    return (acl.user_obj << 6) | (group << 3) | other


@dataclass(frozen=True)
class Reader:
    """A local user the daemon acts for: a uid and every group it is in."""

    uid: int
    groups: frozenset[int]


def may(st: os.stat_result, acl: Acl | None | bool, reader: Reader, want: int) -> bool:
    """Whether `reader` has every permission in `want` (R|W|X) on a file with `st` and `acl`,
    as the kernel decides it (root is not special here: the caller handles it)."""
    if acl is False:
        return st.st_uid == reader.uid and (st.st_mode >> 6) & want == want
    if acl is None:
        if st.st_uid == reader.uid:
            perm = st.st_mode >> 6
        elif st.st_gid in reader.groups:
            perm = st.st_mode >> 3
        else:
            perm = st.st_mode
        return perm & 7 & want == want
    if st.st_uid == reader.uid:
        return acl.user_obj & want == want
    mask = 7 if acl.mask is None else acl.mask
    for uid, perm in acl.users:
        if uid == reader.uid:
            return perm & mask & want == want
    matched = False
    granted = False
    for gid, perm in ((st.st_gid, acl.group_obj), *acl.groups):
        if gid in reader.groups:
            matched = True
            granted = granted or perm & mask & want == want
    if matched:
        return granted
    return acl.other & want == want


def open_to_everyone(st: os.stat_result, acl: Acl | None | bool) -> bool:
    """Whether every user may search directory `st`: the owning group and others have x and no
    ACL entry singles anyone out. Owners are left out: they may chmod their directory anyway."""
    if acl is not None:
        return False
    return st.st_mode & 0o011 == 0o011


@dataclass(frozen=True)
class DirAccess:
    """What `check_listable` found: the directory's identity (so the caller can tell it is
    the one it then opens) and whether everyone may reach it."""

    identity: tuple[int, int]  # (st_dev, st_ino)
    everyone: bool  # every directory on the way may be searched by every user


def _acl_of(fd: int) -> Acl | None | bool:
    return read_acl(f"/proc/self/fd/{fd}", follow=True)


def check_listable(path: str, reader: Reader) -> DirAccess:
    """Walk the absolute `path` as `reader` would (following symlinks as the kernel does,
    needing search permission on every directory looked into and read+search on the last);
    PermissionDenied or NotFound otherwise. Race-free: one descriptor per step, no path is
    resolved twice."""
    denied = PermissionDenied(f"uid {reader.uid} may not read {path}")
    todo = deque(path.split("/"))
    stack = [os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    everyone = True
    hops = 0
    try:
        while todo:
            name = todo.popleft()
            if name in ("", "."):
                continue
            cur = stack[-1]
            st = os.fstat(cur)
            acl = _acl_of(cur)
            if not may(st, acl, reader, X):
                raise denied
            everyone = everyone and open_to_everyone(st, acl)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                stack.append(fd)
                continue
            try:
                if not stat.S_ISLNK(mode):
                    raise NotFound(f"{path}: not a directory")
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links")
                target = os.readlink("", dir_fd=fd)
            finally:
                os.close(fd)
            if target.startswith("/"):
                while len(stack) > 1:
                    os.close(stack.pop())
            todo.extendleft(reversed(target.split("/")))
        st = os.fstat(stack[-1])
        if not stat.S_ISDIR(st.st_mode) or not may(st, _acl_of(stack[-1]), reader, R | X):
            raise denied
        return DirAccess((st.st_dev, st.st_ino), everyone)
    except OSError as e:
        raise from_oserror(e, f"local path {path}") from None
    finally:
        for fd in stack:
            os.close(fd)
