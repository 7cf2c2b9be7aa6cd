"""What the filesystem core shows, and to whom (issue 12), without FUSE.

- attributes: a local datastore's own owners and modes, a datastore's overrides, the [fs]
  defaults for kinds without owners, a private datastore's 0500 root with a zero timeout,
  and attributes memoised per node (the warm-listing fast path);
- visibility: a private datastore is found and listed only for its owner, root and the core;
- symlinks: shown as links (S_IFLNK, readlink), never opened as files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dsmount.errors import InvalidRequest, NotFound
from dsmount.node.fs.datastore import Presentation
from dsmount.node.fs.inodes import ROOT_INODE
from dsmount.storage.local import LocalBackend
from tests.core.test_fs_core import Env, running_fs
from tests.support.memory_backend import MemoryBackend


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_text("f\n")
    os.chown(root / "d" / "f.txt", 4321, 8765)
    os.chmod(root / "d" / "f.txt", 0o640)
    os.chmod(root / "d", 0o750)
    os.chmod(root, 0o711)
    os.symlink("d/f.txt", root / "link")
    return root


async def local_backend(path: Path) -> LocalBackend:
    backend = LocalBackend(path)
    await backend.check()  # what attach does: it learns the root's own entry
    return backend


async def test_local_datastores_show_the_sources_owners_and_modes(src: Path) -> None:
    async with running_fs(uid=7, gid=7, file_mode=0o444, dir_mode=0o555) as env:
        env.attach("loc", await local_backend(src))
        root = await env.resolve("loc")
        assert (stat.S_IMODE(root.mode), root.uid) == (0o711, 0)
        d = await env.resolve("loc/d")
        assert (d.mode, d.uid) == (stat.S_IFDIR | 0o750, 0)
        f = await env.resolve("loc/d/f.txt")
        assert (f.mode, f.uid, f.gid) == (stat.S_IFREG | 0o640, 4321, 8765)
        top = await env.fs.getattr(ROOT_INODE)
        assert (top.mode, top.uid, top.gid) == (stat.S_IFDIR | 0o555, 7, 7)  # [fs]


async def test_overrides_then_source_then_fs_defaults(src: Path) -> None:
    async with running_fs(uid=7, gid=7, file_mode=0o444, dir_mode=0o555) as env:
        env.attach("over", await local_backend(src),
                   presentation=Presentation(uid=1, file_mode=0o400))
        f = await env.resolve("over/d/f.txt")
        assert (f.mode, f.uid, f.gid) == (stat.S_IFREG | 0o400, 1, 8765)  # gid: the source's
        d = await env.resolve("over/d")
        assert (d.mode, d.uid) == (stat.S_IFDIR | 0o750, 1)
        cloud = MemoryBackend({"a/b.bin": b"x"})
        env.attach("cloud", cloud)
        b = await env.resolve("cloud/a/b.bin")
        assert (b.mode, b.uid, b.gid) == (stat.S_IFREG | 0o444, 7, 7)


async def test_a_private_datastore_is_its_owners_alone(src: Path) -> None:
    async with running_fs() as env:
        private = Presentation(uid=1000, file_mode=0o400, dir_mode=0o500, private_to=1000)
        env.attach("mine", MemoryBackend({"x/y.txt": b"y"}), owner=1000, shared=False,
                   presentation=private)
        env.attach("theirs", MemoryBackend({"z": b"z"}), owner=2000, shared=True)
        env.attach("local", await local_backend(src), owner=1000, shared=False,
                   presentation=Presentation(private_to=1000))

        async def names(uid: int | None) -> set[str]:
            fh = await env.fs.opendir(ROOT_INODE, uid)
            try:
                return {n for _, n, _ in await env.fs.readdir(fh, 0)}
            finally:
                await env.fs.releasedir(fh)

        assert await names(2000) == {"theirs"}
        assert await names(1000) == await names(0) == await names(None) == {"mine", "theirs",
                                                                             "local"}
        for name in ("mine", "local"):
            with pytest.raises(NotFound):
                await env.fs.lookup(ROOT_INODE, name, 2000)
        root = await env.fs.lookup(ROOT_INODE, "mine", 1000)
        assert (root.mode, root.uid, root.timeout) == (stat.S_IFDIR | 0o500, 1000, 0.0)
        y = await env.resolve("mine/x/y.txt")
        assert (y.mode, y.uid) == (stat.S_IFREG | 0o400, 1000)
        # A private local datastore: its root is the owner's; inside, the source's own modes.
        local = await env.fs.lookup(ROOT_INODE, "local", 0)
        assert (local.mode, local.uid, local.timeout) == (stat.S_IFDIR | 0o500, 1000, 0.0)
        f = await env.resolve("local/d/f.txt")
        assert (f.mode, f.uid) == (stat.S_IFREG | 0o640, 4321)


async def test_versions_of_a_name_are_hidden_one_by_one() -> None:
    async with running_fs() as env:
        env.attach("ds", MemoryBackend({"f": b"1"}), version="1", owner=1000, shared=False,
                   presentation=Presentation(private_to=1000))
        env.attach("ds", MemoryBackend({"f": b"2"}), version="2", owner=1000, shared=True)
        ds = await env.fs.lookup(ROOT_INODE, "ds", 2000)
        fh = await env.fs.opendir(ds.ino, 2000)
        assert [n for _, n, _ in await env.fs.readdir(fh, 0)] == ["2"]
        await env.fs.releasedir(fh)
        with pytest.raises(NotFound):
            await env.fs.lookup(ds.ino, "1", 2000)
        env.fs.namespace.remove(env.fs.find("ds", "2"))
        with pytest.raises(NotFound):
            await env.fs.lookup(ROOT_INODE, "ds", 2000)  # nothing left it may see


async def test_symlinks_are_links_never_files(src: Path) -> None:
    async with running_fs() as env:
        env.attach("loc", await local_backend(src))
        link = await env.resolve("loc/link")
        assert link.mode == stat.S_IFLNK | 0o777 and link.size == len("d/f.txt")
        assert await env.fs.readlink(link.ino) == "d/f.txt"
        with pytest.raises(InvalidRequest):
            await env.fs.open(link.ino, os.O_RDONLY)
        f = await env.resolve("loc/d/f.txt")
        with pytest.raises(InvalidRequest):
            await env.fs.readlink(f.ino)
        # A file that becomes a link is a new inode: the kernel never mixes the two.
        os.unlink(src / "d" / "f.txt")
        os.symlink(".", src / "d" / "f.txt")
        env.fs.refresh("loc")
        again = await env.resolve("loc/d/f.txt")
        assert again.ino != f.ino and stat.S_ISLNK(again.mode)


async def test_warm_listings_reuse_the_attributes(src: Path) -> None:
    env: Env
    async with running_fs() as env:
        env.attach("loc", await local_backend(src))
        root = await env.resolve("loc")
        first = {n: a for _, n, a in await env.listdir(root.ino)}
        second = {n: a for _, n, a in await env.listdir(root.ino)}
        assert set(first) == {"d", "link"}
        assert all(first[n] is second[n] for n in first)  # memoised: nothing rebuilt
