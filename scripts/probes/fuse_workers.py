"""pyfuse3 read-only mirror of a directory, served by one process or by N forked worker processes.

Prototype for the question "can pyfuse3 workers forked after mount share one /dev/fuse
connection, and does that use more than one core?". The tree is immutable, so every worker
computes the same inode numbers (index of the sorted paths, root = 1) and keeps no per-open
state (fh = inode; READ opens, preads and closes the backing file). Entry and attribute
timeouts are an hour and OPEN answers keep_cache.

Fork protocol (--workers N >= 1): the parent calls pyfuse3.init (mount), then runs trio only
until the FUSE INIT request has been answered (libfuse's `got_init` lives in process memory:
a worker that did not see INIT answers every request with EIO), leaves trio, and forks N
workers that each call trio.run(pyfuse3.main). The parent waits and unmounts at the end.
--workers 0 serves from the mounting process itself (the baseline, no fork).

Measured 2026-12-06 on this 2-core machine (5,000 x 100 KiB, 8 threads, page cache dropped):
one process 0.20-0.23 ms of CPU per file, 0.28-0.32x local disk; 2 workers 1.22-1.27 cores,
+45-60 % files/s; 4 workers 1.5 cores; CPU per file unchanged (0.23-0.27 ms).
see docs/multicore.md for the table; `bench` prints one JSON row per epoch.

    flock -x /tmp/machine.lock .venv/bin/python scripts/probes/fuse_workers.py bench --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from pathlib import Path

import pyfuse3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import epoch_bench  # noqa: E402

TIMEOUT = 3600.0


class Mirror(pyfuse3.Operations):
    """Read-only view of `root`; inode numbers are a pure function of the tree."""

    def __init__(self, root: Path, counters: epoch_bench.Counters) -> None:
        super().__init__()
        self.root = root
        self.paths: list[bytes] = [b"", b""]  # inode -> relative path; 1 = root
        self.children: dict[tuple[int, bytes], int] = {}
        self.listing: dict[int, list[tuple[bytes, int]]] = {1: []}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root).encode()
            parent = 1 if rel_dir == b"." else self.children_of_path(rel_dir)
            for name in sorted(dirnames) + sorted(filenames):
                bname = name.encode()
                ino = len(self.paths)
                self.paths.append(bname if parent == 1 else rel_dir + b"/" + bname)
                self.children[(parent, bname)] = ino
                self.listing[parent].append((bname, ino))
                if name in dirnames:
                    self.listing[ino] = []
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.init_done = False
        self.count = counters.row(0)

    def children_of_path(self, rel: bytes) -> int:
        ino = 1
        for part in rel.split(b"/"):
            ino = self.children[(ino, part)]
        return ino

    def use_row(self, counters: epoch_bench.Counters, worker: int) -> None:
        self.count = counters.row(worker)

    def init(self) -> None:
        self.count[26] += 1
        self.init_done = True

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = self.attrs.get(ino)
        if a is None:
            st = os.lstat(self.root / self.paths[ino].decode())
            a = pyfuse3.EntryAttributes()
            a.st_ino = ino
            a.st_mode = st.st_mode
            a.st_nlink = st.st_nlink
            a.st_size = st.st_size
            a.st_blocks = st.st_blocks
            a.st_blksize = 4096
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = st.st_mtime_ns
            a.generation = 0
            a.entry_timeout = a.attr_timeout = TIMEOUT
            self.attrs[ino] = a
        return a

    async def lookup(self, parent_inode: int, name: bytes, ctx: object = None):
        self.count[1] += 1
        ino = self.children.get((parent_inode, name))
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def getattr(self, inode: int, ctx: object = None):
        self.count[3] += 1
        return self._attr(inode)

    async def forget(self, inode_list) -> None:
        self.count[2] += 1
        self.count[epoch_bench.FORGOTTEN] += len(inode_list)

    async def open(self, inode: int, flags: int, ctx: object):
        self.count[14] += 1
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.count[15] += 1
        fd = os.open(self.root / self.paths[fh].decode(), os.O_RDONLY)
        try:
            return os.pread(fd, size, off)
        finally:
            os.close(fd)

    async def flush(self, fh: int) -> None:
        self.count[25] += 1

    async def release(self, fh: int) -> None:
        self.count[18] += 1

    async def opendir(self, inode: int, ctx: object) -> int:
        self.count[27] += 1
        if inode not in self.listing:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token) -> None:
        self.count[28] += 1
        entries = self.listing[fh]
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), i + 1):
                return

    async def releasedir(self, fh: int) -> None:
        self.count[29] += 1

    async def statfs(self, ctx: object):
        self.count[17] += 1
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_files = len(self.paths)
        return s


async def _serve_until_init(ops: Mirror) -> None:
    """Run pyfuse3's loop only until INIT is answered, so forked workers inherit `got_init`."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main)
        while not ops.init_done:
            await trio.sleep(0.005)
        nursery.cancel_scope.cancel()


def serve(args: argparse.Namespace) -> None:
    counters = epoch_bench.Counters(args.counters)
    ops = Mirror(Path(args.tree), counters)
    for ino in range(1, len(ops.paths)):
        ops._attr(ino)  # before fork: every worker shares the same attributes copy-on-write
    opts = set(pyfuse3.default_options) | {"fsname=dsmprobe", "ro", "allow_other"}
    opts.discard("default_permissions")
    pyfuse3.init(ops, args.mnt, opts)
    if args.workers == 0:
        try:
            trio.run(pyfuse3.main)
        finally:
            pyfuse3.close(unmount=False)
        return
    if args.nonblock:  # pyfuse3 does not expose its fd: find it among ours
        for fd in map(int, os.listdir("/proc/self/fd")):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}") == "/dev/fuse":
                    os.set_blocking(fd, False)
    if not args.fork_before_init:
        trio.run(_serve_until_init, ops)
    kids = []
    for w in range(args.workers):
        pid = os.fork()
        if pid == 0:
            ops.use_row(counters, w)
            code = 0
            try:
                trio.run(pyfuse3.main)
            except BaseException as e:  # noqa: BLE001 - the worker reports and exits
                print(f"worker {w}: {e!r}", file=sys.stderr)
                code = 1
            os._exit(code)
        kids.append(pid)
    for pid in kids:
        _, status = os.waitpid(pid, 0)
        if status:
            print(f"worker pid {pid} exit status {status}", file=sys.stderr)
    pyfuse3.close(unmount=False)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["bench", "serve"], help="bench: run the epoch harness")
    ap.add_argument("--workers", type=int, default=0, help="0 = no fork (baseline)")
    ap.add_argument("--fork-before-init", action="store_true",
                    help="fork before INIT is answered (shows why the parent must answer it)")
    ap.add_argument("--nonblock", action="store_true",
                    help="set O_NONBLOCK on the /dev/fuse fd (shows how a worker fails on EAGAIN)")
    ap.add_argument("--dsmount", action="store_true",
                    help="bench today's dsmount daemon instead (local datastore; --subdir tree)")
    ap.add_argument("--json", help="write the rows here too")
    epoch_bench.add_args(ap)
    return ap


def serve_args(args: argparse.Namespace) -> list[str]:
    if args.dsmount:
        here = Path(__file__).resolve().parent
        return ["-c", "import os,sys; os.execv(sys.argv[1], sys.argv[1:])",
                str(here / "dsmount_local.sh"), args.tree, args.mnt, "/var/tmp/dsm-probe-state"]
    extra = [f for f, on in (("--fork-before-init", args.fork_before_init),
                             ("--nonblock", args.nonblock)) if on]
    return [__file__, "serve", "--workers", str(args.workers), "--tree", args.tree,
            "--mnt", args.mnt, "--counters", args.counters, *extra]


if __name__ == "__main__":
    ap = build_parser()
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a)
    else:
        epoch_bench.main_with(serve_args, ap)
