"""The direct transport's wire structs against linux/fuse.h: sizes, field order, padding."""

from __future__ import annotations

import stat

import pytest

from dsmount.node import fuse_wire as w
from dsmount.node.fs.attributes import Attributes


def test_struct_sizes_are_the_kernel_headers():
    # sizeof() of each struct in linux/fuse.h (protocol 7.40)
    assert w.IN_HEADER.size == 40
    assert w.OUT_HEADER.size == 16
    assert w.ATTR.size == 88
    assert w.ENTRY_HEAD.size + w.ATTR.size == 128  # fuse_entry_out
    assert w.ATTR_OUT_HEAD.size + w.ATTR.size == 104  # fuse_attr_out
    assert w.SETATTR_IN.size == 88
    assert w.READ_IN.size == w.WRITE_IN.size == 40
    assert w.OPEN_IN.size == 8 and w.OPEN_OUT.size == 16
    assert w.CREATE_IN.size == 16
    assert w.RELEASE_IN.size == 24
    assert w.INIT_OUT.size == 64
    assert w.KSTATFS.size == 80
    assert w.DIRENT.size == 24
    assert w.RENAME2_IN.size == 16
    assert w.BACKING_MAP.size == 16


def _attrs(**kw):
    base = dict(ino=42, is_dir=False, size=1000, mtime_ns=1_700_000_000_123_456_789,
                mode=stat.S_IFREG | 0o444, uid=1000, gid=100, timeout=2.5)
    base.update(kw)
    return Attributes(**base)


def test_entry_packs_timeouts_and_attributes_in_order():
    a = _attrs()
    out = w.entry(a)
    nodeid, gen, entry_valid, attr_valid, entry_ns, attr_ns = w.ENTRY_HEAD.unpack_from(out)
    assert (nodeid, gen, entry_valid, attr_valid) == (42, 0, 2, 2)
    assert entry_ns == attr_ns == 500_000_000
    fields = w.ATTR.unpack_from(out, w.ENTRY_HEAD.size)
    ino, size, blocks, atime, mtime, ctime, atns, mtns, ctns, mode, nlink, uid, gid = fields[:13]
    assert (ino, size, blocks) == (42, 1000, 2)
    assert atime == mtime == ctime == 1_700_000_000
    assert atns == mtns == ctns == 123_456_789
    assert (mode, nlink, uid, gid) == (stat.S_IFREG | 0o444, 1, 1000, 100)
    assert len(out) == 128


def test_a_directory_has_two_links_and_its_dirent_type():
    a = _attrs(is_dir=True, mode=stat.S_IFDIR | 0o555)
    assert w.ATTR.unpack_from(w.attr_out(a), w.ATTR_OUT_HEAD.size)[10] == 2
    assert w.dirent_type(a.mode) == 4  # DT_DIR
    assert w.dirent_type(stat.S_IFREG | 0o644) == 8  # DT_REG
    assert w.dirent_type(stat.S_IFLNK | 0o777) == 10  # DT_LNK


@pytest.mark.parametrize("name", [b"a", b"abcdefgh", b"abcdefghi", "é.txt".encode()])
def test_dirents_are_padded_to_eight_bytes(name):
    record = w.dirent(7, 3, name, stat.S_IFREG)
    assert len(record) % 8 == 0
    ino, off, namelen, typ = w.DIRENT.unpack_from(record)
    assert (ino, off, namelen, typ) == (7, 3, len(name), 8)
    assert record[w.DIRENT.size:w.DIRENT.size + namelen] == name
    assert set(record[w.DIRENT.size + namelen:]) <= {0}


def test_an_error_answer_carries_the_negated_errno():
    length, error, unique = w.OUT_HEADER.unpack(w.header(0, 99, 2))
    assert (length, error, unique) == (16, -2, 99)


def test_notifications_have_unique_zero_and_their_code():
    length, code, unique = w.OUT_HEADER.unpack_from(w.notify_inval_inode(5))
    assert (code, unique, length) == (2, 0, 16 + 24)
    note = w.notify_inval_entry(1, b"name")
    length, code, unique = w.OUT_HEADER.unpack_from(note)
    assert (code, unique, length) == (3, 0, len(note))
    parent, namelen, _ = w.NOTIFY_INVAL_ENTRY.unpack_from(note, 16)
    assert (parent, namelen) == (1, 4) and note.endswith(b"name\0")


def test_names_are_cut_at_their_nul():
    assert w.name_of(b"file.txt\0") == b"file.txt"
    assert w.two_names(b"old\0new\0") == (b"old", b"new")


def test_init_answer_offers_passthrough_only_when_asked():
    out = w.init_out(40, 131072, w.ASYNC_READ, w.PASSTHROUGH, 1)
    fields = w.INIT_OUT.unpack(out)
    assert fields[:4] == (7, 40, 131072, w.ASYNC_READ)
    assert fields[6] == w.MAX_WRITE and fields[8] == w.MAX_WRITE // 4096
    assert fields[10] == w.PASSTHROUGH and fields[11] == 1
    assert w.INIT_OUT.unpack(w.init_out(38, 0, 0, 0, 0))[10:12] == (0, 0)
