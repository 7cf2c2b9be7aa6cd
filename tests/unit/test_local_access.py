"""POSIX modes and ACLs evaluated in userspace (dsmount/storage/local_access.py).

The property that matters: the nine bits the mount shows for a file (`presented_bits`) never
let anyone do through the mount what the file's mode and ACL deny them directly (`may`, the
kernel's algorithm). Plus the ACL wire format and `may` on hand-picked cases.
"""

from __future__ import annotations

import os
import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dsmount.storage.local_access import (
    Acl,
    R,
    Reader,
    W,
    X,
    may,
    open_to_everyone,
    parse_acl,
    presented_bits,
)

OWNER, GROUP = 1000, 2000
UNDEFINED = 0xFFFFFFFF


def stat_of(mode: int, uid: int = OWNER, gid: int = GROUP, kind: int = 0o100000) -> os.stat_result:
    return os.stat_result((kind | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


def raw_acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def through_mount(bits: int, st: os.stat_result, reader: Reader, want: int) -> bool:
    """What the kernel decides on a FUSE mount with default_permissions and no ACLs."""
    return may(stat_of(bits, st.st_uid, st.st_gid), None, reader, want)


def test_parse_acl_reads_the_kernels_format() -> None:
    raw = raw_acl((0x01, 6, UNDEFINED), (0x02, 4, 1001), (0x04, 4, UNDEFINED),
                  (0x08, 5, 3000), (0x10, 5, UNDEFINED), (0x20, 0, UNDEFINED))
    assert parse_acl(raw) == Acl(6, 4, 0, 5, ((1001, 4),), ((3000, 5),))
    assert parse_acl(b"") is None
    assert parse_acl(struct.pack("<I", 1) + raw[4:]) is None  # unknown version
    assert parse_acl(raw[:-1]) is None  # truncated
    assert parse_acl(raw_acl((0x01, 6, UNDEFINED), (0x20, 0, UNDEFINED))) is None  # no group::


def test_may_follows_the_kernels_order() -> None:
    st = stat_of(0o640)
    assert may(st, None, Reader(OWNER, frozenset()), R | W)
    assert may(st, None, Reader(5, frozenset({GROUP})), R)
    assert not may(st, None, Reader(5, frozenset({GROUP})), W)
    assert not may(st, None, Reader(5, frozenset()), R)
    # The owner class is decided first, even when it grants less than the others.
    assert not may(stat_of(0o044), None, Reader(OWNER, frozenset({GROUP})), R)
    acl = Acl(user_obj=6, group_obj=4, other=4, mask=4, users=((5, 0),), groups=((7, 6),))
    assert not may(st, acl, Reader(5, frozenset({GROUP})), R)  # named user beats the group
    assert may(st, acl, Reader(6, frozenset({7})), R)
    assert not may(st, acl, Reader(6, frozenset({7})), W)  # the mask limits named groups
    assert may(st, acl, Reader(8, frozenset()), R)
    # A matching group entry that does not grant: denied, never falls back to "other".
    acl = Acl(user_obj=7, group_obj=0, other=5, mask=7)
    assert not may(stat_of(0o705), acl, Reader(5, frozenset({GROUP})), R)
    # An ACL that could not be read: only the owner, by the owner bits.
    assert may(st, False, Reader(OWNER, frozenset()), R)
    assert not may(st, False, Reader(5, frozenset({GROUP})), R)


def test_presented_bits_fold_an_acl_conservatively() -> None:
    assert presented_bits(0o100644, None) == 0o644
    # setfacl -m u:carol:r on a 0600 file: the mode shows the mask (0640), group:: is ---.
    carol = Acl(user_obj=6, group_obj=0, other=0, mask=4, users=((1234, 4),))
    assert presented_bits(0o100640, carol) == 0o600
    # A named user denied while the others may read: the others shown nothing.
    deny = Acl(user_obj=6, group_obj=4, other=4, mask=4, users=((1234, 0),))
    assert presented_bits(0o100644, deny) == 0o600
    # A member of a named group that grants nothing never falls back to "other" directly.
    group_denied = Acl(user_obj=6, group_obj=4, other=4, mask=4, groups=((3000, 0),))
    assert presented_bits(0o100644, group_denied) == 0o640
    assert presented_bits(0o100644, False) == 0o600


def test_open_to_everyone() -> None:
    assert open_to_everyone(stat_of(0o755, kind=0o040000), None)
    assert open_to_everyone(stat_of(0o711, kind=0o040000), None)
    assert not open_to_everyone(stat_of(0o701, kind=0o040000), None)  # the group may not
    assert not open_to_everyone(stat_of(0o750, kind=0o040000), None)
    assert not open_to_everyone(stat_of(0o755, kind=0o040000), Acl(7, 5, 5, 5, ((9, 0),)))


perm = st.integers(0, 7)
ids = st.sampled_from([OWNER, 1001, 1002, 1003])
gids = st.sampled_from([GROUP, 2001, 2002])
acls = st.builds(
    Acl,
    user_obj=perm,
    group_obj=perm,
    other=perm,
    mask=st.one_of(st.none(), perm),
    users=st.lists(st.tuples(st.sampled_from([1001, 1002]), perm), max_size=2, unique_by=lambda
                   t: t[0]).map(tuple),
    groups=st.lists(st.tuples(st.sampled_from([2001, 2002]), perm), max_size=2, unique_by=lambda
                    t: t[0]).map(tuple),
).filter(lambda a: a.mask is not None or not (a.users or a.groups))  # the kernel's rule
readers = st.builds(Reader, uid=ids, groups=st.frozensets(gids, max_size=3))


@settings(max_examples=500)
@example(mode=0, acl=Acl(6, 4, 4, 7, (), ((2001, 0),)), reader=Reader(1003, frozenset({2001})),
         want=R)
@given(mode=st.integers(0, 0o777), acl=st.one_of(st.none(), st.just(False), acls),
       reader=readers, want=st.sampled_from([R, W, X, R | X]))
def test_the_mount_never_grants_what_the_file_denies(mode: int, acl: Acl | None | bool,
                                                     reader: Reader, want: int) -> None:
    if isinstance(acl, Acl):
        # The mode's bits mirror the ACL, as the kernel keeps them.
        mode = (acl.user_obj << 6) | ((acl.group_obj if acl.mask is None else acl.mask) << 3) \
            | acl.other
    st_ = stat_of(mode)
    shown = presented_bits(st_.st_mode, acl)
    if through_mount(shown, st_, reader, want):
        assert may(st_, acl, reader, want), (oct(mode), acl, reader, oct(shown))
    if acl is None:  # without an ACL the mount decides exactly as the file
        assert through_mount(shown, st_, reader, want) == may(st_, acl, reader, want)
