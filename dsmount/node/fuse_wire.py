"""The FUSE wire protocol (linux/fuse.h, protocol 7.x): the structs the kernel and the direct
transport exchange over /dev/fuse, and how dsmount's answers are packed into them. Pure: no
I/O, so every layout is unit-tested against the header's sizes.

Only what the direct transport answers is here. Structs are little-endian as on every Linux
target dsmount runs on; sizes are those of protocol minor >= 9 (the kernel sends the compat
sizes only to older servers).
"""

from __future__ import annotations

import stat
import struct

from dsmount.node.fs.attributes import Attributes

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen padding
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr (88 bytes)
ENTRY_HEAD = struct.Struct("<QQQQII")  # nodeid generation entry_valid attr_valid + nsecs
ATTR_OUT_HEAD = struct.Struct("<QII")  # attr_valid attr_valid_nsec dummy
OPEN_IN = struct.Struct("<II")  # flags open_flags
OPEN_OUT = struct.Struct("<QIi")  # fh open_flags backing_id
CREATE_IN = struct.Struct("<IIII")  # flags mode umask open_flags
READ_IN = struct.Struct("<QQIIQII")  # fh offset size read_flags lock_owner flags padding
WRITE_IN = READ_IN  # fh offset size write_flags lock_owner flags padding
WRITE_OUT = struct.Struct("<II")
RELEASE_IN = struct.Struct("<QIIQ")  # fh flags release_flags lock_owner
FH_IN = struct.Struct("<Q")  # the fh leading flush, fsync, releasedir, fsyncdir
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
GETATTR_IN = struct.Struct("<IIQ")  # getattr_flags dummy fh
MKDIR_IN = struct.Struct("<II")  # mode umask
RENAME_IN = struct.Struct("<Q")  # newdir
RENAME2_IN = struct.Struct("<QII")  # newdir flags padding
ACCESS_IN = struct.Struct("<II")  # mask padding
GETXATTR_IN = struct.Struct("<II")  # size padding
INIT_IN = struct.Struct("<IIIII")  # major minor max_readahead flags flags2 (then unused)
INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")  # ... flags2 max_stack_depth request_timeout
DIRENT = struct.Struct("<QQII")  # ino off namelen type
KSTATFS = struct.Struct("<QQQQQIIII24x")  # blocks bfree bavail files ffree bsize namelen frsize
FORGET_ONE = struct.Struct("<QQ")  # nodeid nlookup
INTERRUPT_IN = struct.Struct("<Q")
NOTIFY_INVAL_INODE = struct.Struct("<Qqq")  # ino offset length
NOTIFY_INVAL_ENTRY = struct.Struct("<QII")  # parent namelen flags

# Opcodes (enum fuse_opcode).
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = range(8, 19)
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT = range(20, 27)
OPENDIR, READDIR, RELEASEDIR, FSYNCDIR = 27, 28, 29, 30
ACCESS, CREATE, INTERRUPT, DESTROY, IOCTL = 34, 35, 36, 38, 39
BATCH_FORGET, READDIRPLUS, RENAME2 = 42, 44, 45
NO_REPLY = frozenset({FORGET, BATCH_FORGET, INTERRUPT})

# INIT flags (fuse_init_in/out.flags, and flags2 = bits 32..63).
ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
DO_READDIRPLUS = 1 << 13
ASYNC_DIO = 1 << 15
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
INIT_EXT = 1 << 30
PASSTHROUGH = 1 << (37 - 32)  # in flags2 (kernel >= 6.9, protocol 7.40)
PASSTHROUGH_MINOR = 40

FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NOFLUSH = 1 << 5
FOPEN_PASSTHROUGH = 1 << 7

FATTR_SIZE = 1 << 3
FATTR_FH = 1 << 6

NOTIFY_INVAL_INODE_CODE, NOTIFY_INVAL_ENTRY_CODE = 2, 3

# ioctls on /dev/fuse (_IOR/_IOW(229, n, ...)).
DEV_IOC_BACKING_OPEN = 0x4010E501  # struct fuse_backing_map {s32 fd; u32 flags; u64 padding}
DEV_IOC_BACKING_CLOSE = 0x4004E502  # u32 backing id
BACKING_MAP = struct.Struct("<iIQ")

BLKSIZE = 128 * 1024  # st_blksize shown (what pyfuse3's adapter shows too)
# The largest request: a WRITE of max_write bytes plus its headers.
MAX_WRITE = 1024 * 1024
BUFFER_SIZE = MAX_WRITE + 4096


def _split_ns(ns: int) -> tuple[int, int]:
    return divmod(ns, 1_000_000_000)


def _valid(timeout: float) -> tuple[int, int]:
    seconds = int(timeout)
    return seconds, int((timeout - seconds) * 1e9)


def attr(a: Attributes) -> bytes:
    """A fuse_attr of `a`."""
    t, ns = _split_ns(a.mtime_ns)
    nlink = 2 if a.is_dir else 1
    return ATTR.pack(a.ino, a.size, (a.size + 511) // 512, t, t, t, ns, ns, ns, a.mode, nlink,
                     a.uid, a.gid, 0, BLKSIZE, 0)


def entry(a: Attributes) -> bytes:
    """A fuse_entry_out of `a` (LOOKUP, MKDIR, CREATE's first half, each READDIRPLUS entry)."""
    secs, nsecs = _valid(a.timeout)
    return ENTRY_HEAD.pack(a.ino, 0, secs, secs, nsecs, nsecs) + attr(a)


def attr_out(a: Attributes) -> bytes:
    secs, nsecs = _valid(a.timeout)
    return ATTR_OUT_HEAD.pack(secs, nsecs, 0) + attr(a)


def dirent_type(mode: int) -> int:
    return stat.S_IFMT(mode) >> 12  # DT_* equals the S_IFMT bits shifted


def dirent(ino: int, offset: int, name: bytes, mode: int) -> bytes:
    record = DIRENT.pack(ino, offset, len(name), dirent_type(mode)) + name
    return record + b"\0" * (-len(record) % 8)


def direntplus(entry_out: bytes, ino: int, offset: int, name: bytes, mode: int) -> bytes:
    return entry_out + dirent(ino, offset, name, mode)


def header(length: int, unique: int, error: int = 0) -> bytes:
    """An answer's header: `error` is a positive errno (sent negated) or 0."""
    return OUT_HEADER.pack(OUT_HEADER.size + length, -error, unique)


def notify_inval_inode(ino: int) -> bytes:
    body = NOTIFY_INVAL_INODE.pack(ino, 0, 0)  # offset 0, length 0: every page and attribute
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_INODE_CODE, 0) + body


def notify_inval_entry(parent: int, name: bytes) -> bytes:
    body = NOTIFY_INVAL_ENTRY.pack(parent, len(name), 0) + name + b"\0"
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_ENTRY_CODE, 0) + body


def init_out(minor: int, max_readahead: int, flags: int, flags2: int, stack_depth: int
             ) -> bytes:
    max_pages = MAX_WRITE // 4096
    return INIT_OUT.pack(7, minor, max_readahead, flags, 64, 48, MAX_WRITE, 1, max_pages, 0,
                         flags2, stack_depth, 0)


def statfs_out(s: dict[str, int]) -> bytes:
    return KSTATFS.pack(s["blocks"], s["bfree"], s["bavail"], s["files"], s["ffree"],
                        s["bsize"], s["namemax"], s["frsize"], 0)


def name_of(body: memoryview | bytes) -> bytes:
    """The NUL-terminated name leading a request body."""
    raw = bytes(body)
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def two_names(body: memoryview | bytes) -> tuple[bytes, bytes]:
    raw = bytes(body)
    first, _, rest = raw.partition(b"\0")
    return first, rest.partition(b"\0")[0]
