"""A read-only mirror of a directory speaking the /dev/fuse protocol directly (no libfuse, no trio).

Prototype for "what does a FUSE request cost without pyfuse3, and what do kernel features save":
  * mount(2) via ctypes with an fd of /dev/fuse (root), synchronous handlers built on `struct`,
    attributes of the immutable tree packed once (inode numbers = index of the sorted paths);
  * --procs N worker processes forked after INIT, each reading its own clone of the connection
    (ioctl FUSE_DEV_IOC_CLONE) or, with --shared-fd, the inherited fd itself; --readers T reader
    threads per process (each with its own clone);
  * --passthrough: INIT asks FUSE_PASSTHROUGH (kernel >= 6.9, CAP_SYS_ADMIN); OPEN opens the
    backing file, registers it (FUSE_DEV_IOC_BACKING_OPEN), answers FOPEN_PASSTHROUGH with the
    backing id as fh, and RELEASE drops it (FUSE_DEV_IOC_BACKING_CLOSE): READs never reach us;
  * --backing-cache (with --passthrough, one process): one backing id per inode, kept until the
    inode's FORGET, so OPEN costs a dict lookup and RELEASE nothing;
  * --noflush: OPEN answers FOPEN_NOFLUSH, so close(2) sends no FLUSH;
  * --no-open: OPEN and FLUSH answer ENOSYS once; the kernel then sends neither OPEN, FLUSH nor
    RELEASE again (FUSE_NO_OPEN_SUPPORT), leaving LOOKUP + READ per file.
Entry and attribute timeouts are an hour; without passthrough OPEN answers FOPEN_KEEP_CACHE.

Figures (2026-12-06, 2 cores, 5,000 x 100 KiB, 8 threads, page cache dropped): 0.08-0.13 ms of
daemon CPU per file (pyfuse3: 0.20-0.23); with passthrough 0.030-0.048 ms and 0.71-0.93x local
disk from one process. Full table: docs/multicore.md.

    flock -x /tmp/machine.lock .venv/bin/python scripts/probes/rawfuse.py bench --procs 2
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import epoch_bench  # noqa: E402

IN_HDR = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HDR = struct.Struct("<IiQ")
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ENTRY_HEAD = struct.Struct("<QQQQII")
ATTR_OUT_HEAD = struct.Struct("<QII")
OPEN_OUT = struct.Struct("<QIi")
READ_IN = struct.Struct("<QQII")
INIT_IN = struct.Struct("<IIIII")
INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")
DIRENT = struct.Struct("<QQII")
KSTATFS = struct.Struct("<QQQQQIIII24x")
TIMEOUT = 3600
BUFSIZE = 128 * 1024 + 8192

FUSE_ASYNC_READ, FUSE_PARALLEL_DIROPS, FUSE_MAX_PAGES = 1 << 0, 1 << 18, 1 << 22
FUSE_INIT_EXT, FLAGS2_PASSTHROUGH = 1 << 30, 1 << (37 - 32)
FOPEN_KEEP_CACHE, FOPEN_NOFLUSH, FOPEN_PASSTHROUGH = 1 << 1, 1 << 5, 1 << 7
DEV_IOC_CLONE = 0x8004E500  # _IOR(229, 0, uint32)
DEV_IOC_BACKING_OPEN = 0x4010E501  # _IOW(229, 1, struct fuse_backing_map)
DEV_IOC_BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, uint32)
NO_REPLY = {2, 36, 42}  # FORGET, INTERRUPT, BATCH_FORGET
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


class BackingMap(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int32), ("flags", ctypes.c_uint32), ("padding", ctypes.c_uint64)]


def backing_open(dev: int, path: bytes) -> int:
    """Register `path` as a backing file; the id is ioctl's return value (fcntl.ioctl drops it)."""
    f = os.open(path, os.O_RDONLY)
    try:
        bid = LIBC.ioctl(dev, DEV_IOC_BACKING_OPEN, ctypes.byref(BackingMap(f, 0, 0)))
    finally:
        os.close(f)
    if bid < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"FUSE_DEV_IOC_BACKING_OPEN: {os.strerror(e)}")
    return bid


class Tree:
    """Inode numbers, packed attributes and listings of an immutable tree (root = 1)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: list[bytes] = [b"", bytes(root)]
        self.children: dict[tuple[int, bytes], int] = {}
        self.listing: dict[int, list[tuple[bytes, int, int]]] = {1: []}
        index = {bytes(root): 1}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            parent = index[os.fsencode(dirpath)]
            for name in sorted(dirnames) + sorted(filenames):
                full = os.fsencode(os.path.join(dirpath, name))
                ino = len(self.paths)
                self.paths.append(full)
                index[full] = ino
                self.children[(parent, os.fsencode(name))] = ino
                is_dir = name in dirnames
                self.listing[parent].append((os.fsencode(name), ino, 4 if is_dir else 8))
                if is_dir:
                    self.listing[ino] = []
        self.attr = [b""] + [self._pack(i) for i in range(1, len(self.paths))]
        self.entry = [b""] + [ENTRY_HEAD.pack(i, 0, TIMEOUT, TIMEOUT, 0, 0) + self.attr[i]
                              for i in range(1, len(self.paths))]

    def _pack(self, ino: int) -> bytes:
        st = os.lstat(self.paths[ino])
        t, ns = divmod(st.st_mtime_ns, 10**9)
        return ATTR.pack(ino, st.st_size, st.st_blocks, t, t, t, ns, ns, ns, st.st_mode,
                         st.st_nlink, 0, 0, 0, 4096, 0)


class Server:
    """Synchronous handlers; one instance per worker process (threads share it)."""

    def __init__(self, tree: Tree, args: argparse.Namespace, dev: int) -> None:
        self.tree, self.args, self.dev = tree, args, dev
        self.count: memoryview | None = None
        self.no_open = args.no_open
        self.bids: dict[int, int] = {}  # --backing-cache: inode -> backing id

    def reply(self, fd: int, unique: int, body: bytes = b"", err: int = 0) -> None:
        # ENOENT: the request was interrupted and is gone
        with contextlib.suppress(FileNotFoundError):
            os.write(fd, OUT_HDR.pack(16 + len(body), -err, unique) + body)

    def init(self, fd: int, body: memoryview) -> bytes:
        major, minor, readahead, flags, flags2 = INIT_IN.unpack_from(body)
        if major != 7:
            raise RuntimeError(f"kernel FUSE protocol {major}.{minor}")
        out_flags = flags & (FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES
                             | FUSE_INIT_EXT)
        out2 = 0
        if self.args.passthrough:
            if not flags2 & FLAGS2_PASSTHROUGH:
                raise RuntimeError(f"kernel does not offer FUSE_PASSTHROUGH (flags2 {flags2:#x})")
            out2 = FLAGS2_PASSTHROUGH
        self.minor = minor
        return INIT_OUT.pack(7, minor, readahead, out_flags, 16, 12, 128 * 1024, 1, 32, 0,
                             out2, 1 if self.args.passthrough else 0, 0)

    def forget(self, node: int) -> None:
        """The kernel dropped the inode: no open file can still need its cached backing id."""
        bid = self.bids.pop(node, None)
        if bid is not None:
            fcntl.ioctl(self.dev, DEV_IOC_BACKING_CLOSE, struct.pack("<I", bid))

    def handle(self, fd: int, req: bytes) -> None:
        _ln, op, unique, node, _uid, _gid, _pid, _ext, _pad = IN_HDR.unpack_from(req)
        count = self.count
        if count is not None and op < 63:
            count[op] += 1
        tree = self.tree
        body = memoryview(req)[40:]
        if op == 1:  # LOOKUP
            ino = tree.children.get((node, bytes(body[:-1])))
            if ino is None:
                return self.reply(fd, unique, err=errno.ENOENT)
            return self.reply(fd, unique, tree.entry[ino])
        if op == 15:  # READ
            fh, off, size, _rf = READ_IN.unpack_from(body)
            f = os.open(tree.paths[node], os.O_RDONLY)
            try:
                return self.reply(fd, unique, os.pread(f, size, off))
            finally:
                os.close(f)
        if op == 14:  # OPEN
            if self.no_open:
                return self.reply(fd, unique, err=errno.ENOSYS)
            if self.args.passthrough:
                if self.args.backing_cache:
                    bid = self.bids.get(node) or self.bids.setdefault(
                        node, backing_open(self.dev, tree.paths[node]))
                    fh = 0
                else:
                    bid = fh = backing_open(self.dev, tree.paths[node])
                flags = FOPEN_PASSTHROUGH | (FOPEN_NOFLUSH if self.args.noflush else 0)
                return self.reply(fd, unique, OPEN_OUT.pack(fh, flags, bid))
            flags = FOPEN_KEEP_CACHE | (FOPEN_NOFLUSH if self.args.noflush else 0)
            return self.reply(fd, unique, OPEN_OUT.pack(node, flags, 0))
        if op == 18:  # RELEASE
            fh = struct.unpack_from("<Q", body)[0]
            if self.args.passthrough and fh:
                fcntl.ioctl(self.dev, DEV_IOC_BACKING_CLOSE, struct.pack("<I", fh))
            return self.reply(fd, unique)
        if op == 25:  # FLUSH
            return self.reply(fd, unique, err=errno.ENOSYS if self.no_open else 0)
        if op == 3:  # GETATTR
            return self.reply(fd, unique, ATTR_OUT_HEAD.pack(TIMEOUT, 0, 0) + tree.attr[node])
        if op == 2:  # FORGET
            if count is not None:
                count[epoch_bench.FORGOTTEN] += 1
            return self.forget(node)
        if op == 42:  # BATCH_FORGET
            n = struct.unpack_from("<I", body)[0]
            if count is not None:
                count[epoch_bench.FORGOTTEN] += n
            if self.bids:
                for i in range(n):
                    self.forget(struct.unpack_from("<Q", body, 8 + 16 * i)[0])
            return None
        if op == 27:  # OPENDIR
            if node not in tree.listing:
                return self.reply(fd, unique, err=errno.ENOTDIR)
            return self.reply(fd, unique, OPEN_OUT.pack(node, 0, 0))
        if op == 28:  # READDIR: offsets are indexes into the listing
            fh, off, size, _rf = READ_IN.unpack_from(body)
            out = bytearray()
            for i, (name, ino, typ) in enumerate(tree.listing[node][off:], off + 1):
                rec = DIRENT.pack(ino, i, len(name), typ) + name
                rec += b"\0" * (-len(rec) % 8)
                if len(out) + len(rec) > size:
                    break
                out += rec
            return self.reply(fd, unique, bytes(out))
        if op in (29, 38):  # RELEASEDIR, DESTROY
            return self.reply(fd, unique)
        if op == 17:  # STATFS
            return self.reply(fd, unique, KSTATFS.pack(0, 0, 0, len(tree.paths), 0, 4096, 255,
                                                       4096, 0))
        if op in NO_REPLY:
            return None
        return self.reply(fd, unique, err=errno.ENOSYS)

    def loop(self, fd: int) -> None:
        while True:
            try:
                req = os.read(fd, BUFSIZE)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOENT:  # interrupted before we read it
                    continue
                if e.errno == errno.ENODEV:  # unmounted
                    return
                raise
            try:
                self.handle(fd, req)
            except OSError as e:
                if len(req) >= 40:
                    unique = IN_HDR.unpack_from(req)[2]
                    self.reply(fd, unique, err=e.errno or errno.EIO)


def clone(dev: int) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, DEV_IOC_CLONE, struct.pack("<I", dev))
    return fd


def mount(mnt: str) -> int:
    dev = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    opts = f"fd={dev},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions"
    ms_rdonly, ms_nosuid, ms_nodev = 1, 2, 4
    if LIBC.mount(b"dsmprobe", mnt.encode(), b"fuse.dsmprobe", ms_rdonly | ms_nosuid | ms_nodev,
                  opts.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount: {os.strerror(e)}")
    return dev


def run_worker(server: Server, args: argparse.Namespace) -> None:
    fds = [server.dev if args.shared_fd else clone(server.dev) for _ in range(args.readers)]
    threads = [threading.Thread(target=server.loop, args=(fd,)) for fd in fds[1:]]
    for t in threads:
        t.start()
    server.loop(fds[0])
    for t in threads:
        t.join()


def serve(args: argparse.Namespace) -> None:
    if args.backing_cache and (args.procs != 1 or not args.passthrough):
        raise SystemExit("--backing-cache needs --passthrough and --procs 1 (ids are per process)")
    counters = epoch_bench.Counters(args.counters)
    tree = Tree(Path(args.tree).resolve())
    dev = mount(args.mnt)
    server = Server(tree, args, dev)
    req = os.read(dev, BUFSIZE)
    _ln, op, unique, *_ = IN_HDR.unpack_from(req)
    if op != 26:
        raise RuntimeError(f"first request is opcode {op}, not INIT")
    server.reply(dev, unique, server.init(dev, memoryview(req)[40:]))
    kids = []
    for w in range(args.procs):
        pid = os.fork()
        if pid == 0:
            server.count = counters.row(w)
            code = 0
            try:
                run_worker(server, args)
            except BaseException as e:  # noqa: BLE001 - the worker reports and exits
                print(f"worker {w}: {e!r}", file=sys.stderr)
                code = 1
            os._exit(code)
        kids.append(pid)
    for pid in kids:
        _, status = os.waitpid(pid, 0)
        if status:
            print(f"worker pid {pid} exit status {status}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["bench", "serve"], help="bench: run the epoch harness")
    ap.add_argument("--procs", type=int, default=1, help="worker processes (forked after INIT)")
    ap.add_argument("--readers", type=int, default=1, help="reader threads per process")
    ap.add_argument("--shared-fd", action="store_true", help="read the inherited fd, no clone")
    ap.add_argument("--passthrough", action="store_true")
    ap.add_argument("--noflush", action="store_true")
    ap.add_argument("--backing-cache", action="store_true",
                    help="passthrough: one backing id per inode, closed at FORGET (one process)")
    ap.add_argument("--no-open", action="store_true", help="answer OPEN/FLUSH with ENOSYS")
    ap.add_argument("--json", help="write the rows here too")
    epoch_bench.add_args(ap)
    return ap


def serve_args(args: argparse.Namespace) -> list[str]:
    flags = [f for f, on in (("--shared-fd", args.shared_fd), ("--passthrough", args.passthrough),
                             ("--noflush", args.noflush), ("--no-open", args.no_open),
                             ("--backing-cache", args.backing_cache)) if on]
    return [__file__, "serve", "--procs", str(args.procs), "--readers", str(args.readers),
            "--tree", args.tree, "--mnt", args.mnt, "--counters", args.counters, *flags]


if __name__ == "__main__":
    ap = build_parser()
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a)
    else:
        epoch_bench.main_with(serve_args, ap)
