"""Manifests (storage/manifest.py) and the backend that serves a version from one
(storage/manifest_backend.py), over the in-memory backend: namespace from the manifest alone,
bytes through the wrapped backend at the recorded place, pinned to the recorded ETag."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dsmount.errors import Changed, InvalidRequest, NotFound
from dsmount.storage.local import LocalBackend
from dsmount.storage.manifest import FileRecord, Manifest, write_manifest
from dsmount.storage.manifest_backend import ManifestBackend, fetch_manifest
from tests.support.memory_backend import MemoryBackend


def build(tmp_path: Path, inner: MemoryBackend) -> Manifest:
    pack = b"aaaa" + b"bbbbbb" + b"c"
    inner.put("v/.packs/p1", pack)
    inner.put("v/big.bin", b"B" * 5000)
    pack_etag = inner.files["v/.packs/p1"][1]
    big_etag = inner.files["v/big.bin"][1]
    records = [
        FileRecord("d/a.txt", 4, 11, b"\x01" * 16, pack="v/.packs/p1", offset=0),
        FileRecord("d/e/b.txt", 6, 12, None, pack="v/.packs/p1", offset=4),
        FileRecord("c.txt", 1, 13, None, pack="v/.packs/p1", offset=10),
        FileRecord("big.bin", 5000, 14, None, big_etag),
    ]
    path = tmp_path / "m"
    counts = write_manifest(path, records, root="v", kind="version",
                            packs=[("v/.packs/p1", len(pack), pack_etag)], dir_mtime_ns=99)
    assert counts == {"files": 4, "bytes": 5011}
    return Manifest(path)


def test_the_manifest_answers_the_namespace(tmp_path: Path) -> None:
    m = build(tmp_path, MemoryBackend())
    assert [r.name for page in m.pages("") for r in page] == ["big.bin", "c.txt", "d"]
    assert [(r.name, r.is_dir) for page in m.pages("d") for r in page] == [
        ("a.txt", False), ("e", True)]
    row = m.row("d/e/b.txt")
    assert row is not None and (row.size, row.mtime_ns, row.offset) == (6, 12, 4)
    assert m.row("d/e").is_dir and m.row("d/e").mtime_ns == 99  # type: ignore[union-attr]
    assert m.row("nope") is None and m.row("d/nope") is None
    assert [p for p, _ in m.walk("")] == ["big.bin", "c.txt", "d/a.txt", "d/e/b.txt"]
    assert [p for p, _ in m.walk("d/e/b.txt")] == ["d/e/b.txt"]
    with pytest.raises(NotFound):
        list(m.pages("x"))


def test_listing_pages_are_complete_and_ordered(tmp_path: Path) -> None:
    records = [FileRecord(f"f{i:05d}", i, i) for i in range(2500)]
    write_manifest(tmp_path / "m", records, root="", kind="snapshot")
    pages = list(Manifest(tmp_path / "m").pages("", page=1000))
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert [r.name for p in pages for r in p] == [f"f{i:05d}" for i in range(2500)]


@pytest.mark.parametrize(
    "paths", [["a", "a/b"], ["x/../y"], ["ok", "ok"], ["a//b"], ["n\0ul"]]
)
def test_an_impossible_tree_is_refused(tmp_path: Path, paths: list[str]) -> None:
    with pytest.raises(InvalidRequest):
        write_manifest(tmp_path / "m", [FileRecord(p, 1, 1) for p in paths], root="", kind="x")
    assert not (tmp_path / "m").exists()


async def test_the_backend_serves_bytes_from_packs_pinned(tmp_path: Path) -> None:
    inner = MemoryBackend()
    backend = ManifestBackend(inner, build(tmp_path, inner), name="v.manifest")
    entry = await backend.stat("d/e/b.txt")
    assert (entry.is_dir, entry.size, entry.mtime_ns) == (False, 6, 12)
    assert await backend.read("d/e/b.txt", 0, 100, entry.etag) == b"bbbbbb"
    assert await backend.read("d/e/b.txt", 2, 3) == b"bbb"
    assert await backend.read("c.txt", 0, 10) == b"c"
    assert await backend.read("big.bin", 4990, 100) == b"B" * 10
    names = [e.name for page in [p async for p in backend.list("d")] for e in page]
    assert names == ["a.txt", "e"]
    calls = inner.faults.calls
    await backend.stat("d/a.txt")
    assert [e async for e in backend.list("")] and inner.faults.calls == calls  # no requests
    with pytest.raises(NotFound):
        await backend.stat("missing")
    with pytest.raises(Changed):  # opened as another version of the file
        await backend.read("d/a.txt", 0, 4, "some-other-etag")
    inner.put("v/.packs/p1", b"rewritten!!")  # the pack changed since the version was made
    with pytest.raises(Changed):
        await backend.read("d/a.txt", 0, 4)


async def test_fetching_a_manifest_needs_no_head_and_happens_once(tmp_path: Path) -> None:
    inner = MemoryBackend()
    build(tmp_path, inner)
    inner.put("v.manifest", (tmp_path / "m").read_bytes())
    dest = tmp_path / "cache" / "x.manifest"
    await fetch_manifest(inner, "v.manifest", dest)
    assert dest.read_bytes() == (tmp_path / "m").read_bytes()
    reads = len(inner.faults.reads)
    await fetch_manifest(inner, "v.manifest", dest)
    assert len(inner.faults.reads) == reads
    with pytest.raises(NotFound):
        await fetch_manifest(inner, "absent.manifest", tmp_path / "cache" / "y.manifest")


async def test_a_version_keeps_no_entry_per_inode_and_bounded_attributes(tmp_path: Path) -> None:
    """The core over a manifest: every listed inode is live (readdirplus) but cold (no Node)
    until asked about, none holds an Entry, attributes come from the manifest and are
    memoised within a bound, forget releases the inodes, and an inode number is stable while
    referenced."""
    from dsmount.node.cache.blocks import BlockCache
    from dsmount.node.fs.core import FileSystem
    from dsmount.node.fs.datastore import Datastore

    names = [f"f{i:04d}.bin" for i in range(300)]
    path = tmp_path / "wide"
    write_manifest(path, [FileRecord(f"d/{n}", i + 1, 7, None, None) for i, n in
                          enumerate(names)], root="v", kind="version")
    fs = FileSystem(BlockCache(2**20))
    fs.attributes.size = 64  # smaller than the directory
    backend = ManifestBackend(MemoryBackend(), Manifest(path), name="m")
    fs.attach(Datastore("ver", backend, version="1", immutable=True))
    top = await fs.lookup(1, "ver")
    version = await fs.lookup(top.ino, "1")
    d = await fs.lookup(version.ino, "d")
    listed = []
    for _ in range(2):  # a warm second listing: the same inodes
        fh = await fs.opendir(d.ino)
        batch = await fs.readdir(fh, 0, 1000)
        await fs.releasedir(fh)
        for _, _, attrs in batch:
            fs.remember(attrs.ino)
        listed.append([(name, a.ino, a.size) for _, name, a in batch])
    assert listed[0] == listed[1]
    assert [n for n, _, _ in listed[0]] == names
    assert [size for _, _, size in listed[0]] == list(range(1, 301))
    inos = {ino for _, ino, _ in listed[0]}
    assert not inos & {n.ino for n in fs.inodes.nodes()}  # cold: no Node object for them
    assert len(fs.inodes) >= 300
    nodes = [fs.inodes.get(ino) for ino in sorted(inos)[:10]]  # asked about: promoted
    assert all(n is not None and n._entry is None for n in nodes)  # still no Entry kept
    assert [n.entry.size for n in nodes if n] == list(range(1, 11))
    assert len(fs.attributes) <= 64
    assert (await fs.getattr(listed[0][299][1])).size == 300  # answered from the manifest
    assert (await fs.lookup(d.ino, "f0007.bin")).ino == listed[0][7][1]
    fs.forget([(ino, 2) for _, ino, _ in listed[0]])
    assert fs.inodes.get(listed[0][0][1]) is None  # released: two references, two forgotten
    assert fs.inodes.get(listed[0][7][1]) is not None  # the lookup's reference remains
    fs.forget([(listed[0][7][1], 1)])
    assert fs.inodes.get(listed[0][7][1]) is None
    again = await fs.lookup(d.ino, "f0007.bin")
    assert again.ino not in {ino for _, ino, _ in listed[0]} and again.size == 8  # never reused


async def test_a_version_declares_what_it_can_and_keeps_its_kinds_other_capabilities(
    tmp_path: Path,
) -> None:
    inner = MemoryBackend()
    backend = ManifestBackend(inner, build(tmp_path, inner), name="v.manifest")
    assert not inner.capabilities.locate and backend.capabilities.locate
    # A version is immutable: neither the mount's writes nor uploads.
    assert backend.capabilities == replace(inner.capabilities, locate=True, writable=False,
                                           uploads=False)
    where = backend.locate("d/e/b.txt")
    assert (where.object, where.offset, where.length) == ("v/.packs/p1", 4, 6)
    assert backend.objects() is inner and backend.content_bytes() == 5011
    with pytest.raises(NotImplementedError):
        inner.locate("d/e/b.txt")
    (tmp_path / "dir").mkdir()
    local = LocalBackend(tmp_path / "dir")
    try:
        caps = local.capabilities
        assert (caps.remote, caps.disk_cacheable, caps.local_directory) == (False, False, True)
        st = (tmp_path / "dir").stat()
        assert local.directory_identity() == (st.st_dev, st.st_ino)
        assert not inner.capabilities.local_directory
    finally:
        await local.aclose()
