"""Local disk access that never leaves the datastore (storage/local_root.py, local.py,
local_store.py, local_access.check_listable), on real directories.

Every resolution test runs twice: with openat2 (the kernel's RESOLVE_BENEATH) and with the
per-component fallback walk, which must agree exactly.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsmount.errors import BackendError, Changed, DsmountError, NotFound, PermissionDenied
from dsmount.storage import local_root
from dsmount.storage.files import Files
from dsmount.storage.local import LocalBackend
from dsmount.storage.local_access import Reader, check_listable
from dsmount.storage.local_root import Escapes, LocalRoot, NotRegular

SECRET = b"outside\n"
NOBODY = Reader(65534, frozenset({65534}))


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        assert local_root.openat2_available(), "this kernel has openat2 (5.6+)"
    else:
        monkeypatch.setattr(local_root, "_openat2", None)
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "outside.txt").write_bytes(SECRET)
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "f").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f.txt").write_text("f\n")
    (root / "top.txt").write_text("top\n")
    os.symlink("a/b/f.txt", root / "rel")
    os.symlink(str(root / "a"), root / "abs-in")
    os.symlink("../../top.txt", root / "a" / "b" / "up")
    os.symlink("rel", root / "chain")
    os.symlink("../outside.txt", root / "rel-out")
    os.symlink(str(tmp_path / "outside.txt"), root / "abs-out")
    os.symlink("/", root / "slash")
    os.symlink("..", root / "dotdot")
    os.symlink("a/../../outside.txt", root / "via-dotdot")
    os.symlink("rel-out", root / "chain-out")
    os.symlink("loop", root / "loop")
    os.symlink("missing", root / "dangling")
    os.mkfifo(root / "fifo")
    return root


def test_lstat_shows_inside_links_as_canonical_relative_targets(tree: Path,
                                                                resolution: str) -> None:
    r = LocalRoot(str(tree))
    assert r.lstat("rel").target == "a/b/f.txt"
    assert r.lstat("abs-in").target == "a"
    assert r.lstat("a/b/up").target == "../../top.txt"
    assert r.lstat("chain").target == "a/b/f.txt"
    found = r.lstat("a/b/f.txt")
    assert found.target is None and found.bits == 0o644 and not found.is_dir
    assert r.lstat("").is_dir and r.lstat("a").is_dir


@pytest.mark.parametrize("name", ["rel-out", "abs-out", "slash", "dotdot", "via-dotdot",
                                  "chain-out"])
def test_links_that_leave_are_not_served(tree: Path, resolution: str, name: str) -> None:
    r = LocalRoot(str(tree))
    with pytest.raises(Escapes):
        r.lstat(name)
    assert name not in {f.name for f in r.scan("")}


def test_what_is_not_served(tree: Path, resolution: str) -> None:
    r = LocalRoot(str(tree))
    with pytest.raises(BackendError, match="too many levels"):
        r.lstat("loop")  # a loop is an error of the source (EIO), not an absence
    with pytest.raises(NotFound):
        r.lstat("dangling")
    with pytest.raises(NotFound, match="not a regular file, directory or symbolic link"):
        r.lstat("fifo")
    with pytest.raises(NotRegular):
        r.open_file("fifo")  # and no open(2) of it could block
    with pytest.raises(NotFound):
        r.lstat("a/../top.txt")  # ".." never reaches the disk
    names = {f.name for f in r.scan("")}
    assert names == {"a", "top.txt", "rel", "abs-in", "chain"}


def test_a_symlink_on_the_way_is_never_followed(tree: Path, resolution: str) -> None:
    r = LocalRoot(str(tree))
    for path in ("slash/etc/passwd", "abs-in/b/f.txt", "dotdot/outside.txt", "rel-out/x"):
        with pytest.raises(NotFound):
            r.lstat(path)
        with pytest.raises(NotFound):
            r.open_file(path)
    with pytest.raises(NotFound):
        r.open_dir("abs-in")
    with pytest.raises(NotFound):
        r.scan("slash")
    with pytest.raises(OSError) as e:
        r.open_file("rel")  # the link itself is no file to read
    assert e.value.errno == errno.ELOOP


def test_a_directory_swapped_after_it_was_opened_does_not_escape(tree: Path,
                                                                  resolution: str) -> None:
    r = LocalRoot(str(tree))
    fd, _ = r.open_file("a/b/f.txt")
    os.close(fd)
    os.rename(tree / "a", tree / "a.old")
    os.symlink(str(tree.parent / "outdir"), tree / "a")
    os.symlink(str(tree.parent / "outdir"), tree / "a.old" / "b2")
    for path in ("a/f", "a.old/b2/f"):
        with pytest.raises(NotFound):
            r.open_file(path)
    # The root itself replaced: what was attached is still what is served.
    os.rename(tree, tree.parent / "moved")
    os.symlink(str(tree.parent / "outdir"), tree)
    assert {f.name for f in r.scan("")} >= {"top.txt", "a.old"}
    with pytest.raises(NotFound):
        r.open_file("f")


def test_escapes_are_logged_once(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = LocalRoot(str(tree))
    with caplog.at_level(logging.WARNING, logger="dsmount.storage.local_root"):
        for _ in range(3):
            r.scan("")
            with pytest.raises(Escapes):
                r.lstat("slash")
    lines = [m for m in caplog.messages if "slash:" in m]
    assert lines == [f"[{tree}] slash: symbolic link leads outside the datastore; not served"]


def test_the_root_descriptor_outlives_operations_in_flight(tree: Path) -> None:
    r = LocalRoot(str(tree))
    fd = r.fd
    with r._use():
        r.close()
        assert os.fstat(fd)  # still open: an operation is using it
        with pytest.raises(NotFound, match="detached"):
            r.lstat("top.txt")  # no new operation starts
    with pytest.raises(OSError):
        os.fstat(fd)
    r.close()  # twice is fine


# -- the mount's face -------------------------------------------------------------------------
async def test_backend_entries_carry_the_sources_owner_modes_and_links(tree: Path) -> None:
    os.chown(tree / "top.txt", 4321, 8765)
    os.chmod(tree / "top.txt", 0o640)
    backend = LocalBackend(tree)
    await backend.check()
    assert backend.root_entry is not None and backend.root_entry.mode == 0o755
    entries = {e.name: e for page in [p async for p in backend.list("")] for e in page}
    top = entries["top.txt"]
    assert (top.uid, top.gid, top.mode, top.kind) == (4321, 8765, 0o640, "file")
    link = entries["rel"]
    assert (link.kind, link.symlink, link.size) == ("symlink", "a/b/f.txt", 9)
    assert entries["a"].kind == "dir"
    assert "rel-out" not in entries and "fifo" not in entries
    assert await backend.read("a/b/f.txt", 0, 10) == b"f\n"
    with pytest.raises(NotFound):
        await backend.stat("slash")
    # A file replaced by a link (even one inside) is no longer that file.
    with pytest.raises(BackendError):
        await backend.read("rel", 0, 1)
    top_etag = top.etag
    os.unlink(tree / "top.txt")
    os.mkfifo(tree / "top.txt")
    with pytest.raises(Changed):
        await backend.read("top.txt", 0, 1, top_etag)
    await backend.aclose()


# -- the transfers' face ----------------------------------------------------------------------
def test_store_reads_never_leave_the_root(tree: Path, resolution: str) -> None:
    store = Files(LocalBackend(tree))
    walked = {f.path: f.size for f in store.walk()}
    # Files, and links to files inside (read as those files); no link out, no dir link.
    assert walked == {"top.txt": 4, "a/b/f.txt": 2, "rel": 2, "chain": 2, "a/b/up": 4}
    out = io.BytesIO()
    store.download(store.stat("rel"), out, progress=lambda n: None)
    assert out.getvalue() == b"f\n"
    for path in ("rel-out", "abs-out", "slash/etc/passwd", "abs-in/b/f.txt", "fifo"):
        assert store.stat(path) is None, path
        with pytest.raises(NotFound):
            store.read_range(path, 0, 10)
    assert store.list_dir("") == (["chain", "rel", "top.txt"], ["a"])
    assert list(store.walk("slash")) == []


def test_store_writes_never_leave_the_root(tree: Path, resolution: str) -> None:
    store = Files(LocalBackend(tree))
    outside = tree.parent / "outdir"
    with pytest.raises(DsmountError, match="not a directory"):
        store.put_bytes("abs-in/new.txt", b"x")
    src = tree.parent / "upload.bin"
    src.write_bytes(b"data")
    with pytest.raises(DsmountError, match="not a directory"):
        store.upload(src, "slash/tmp/x", size=4, md5=b"", overwrite=True, progress=lambda n: None)
    # A link at the destination name is replaced, never written through.
    os.symlink(str(outside / "f"), tree / "victim")
    assert store.put_bytes("victim", b"new") is True
    assert (outside / "f").read_bytes() == SECRET
    assert not (tree / "victim").is_symlink() and (tree / "victim").read_bytes() == b"new"
    assert store.put_bytes("victim", b"again", exclusive=True) is False
    store.upload(src, "deep/er/copy.bin", size=4, md5=b"", overwrite=False,
                 progress=lambda n: None)
    assert (tree / "deep" / "er" / "copy.bin").read_bytes() == b"data"
    assert stat.S_IMODE((tree / "deep" / "er" / "copy.bin").stat().st_mode) == 0o644
    assert sorted(os.listdir(outside)) == ["f"]
    assert not [p for p in tree.rglob("*.part")]


# -- who may attach what ----------------------------------------------------------------------
@pytest.fixture
def shared_top() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="dsm-access-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        yield top
    finally:
        shutil.rmtree(top)


def _kernel_says(path: Path) -> bool:
    """Whether nobody may list `path`, asking the kernel itself."""
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls",
                          str(path)], capture_output=True, timeout=30)
    return out.returncode == 0


def test_check_listable_agrees_with_the_kernel(shared_top: Path) -> None:
    for name, mode in (("open", 0o755), ("closed", 0o700), ("search-only", 0o711),
                       ("others-only", 0o705)):
        (shared_top / name / "sub").mkdir(parents=True)
        os.chmod(shared_top / name, mode)
    os.symlink(str(shared_top / "closed" / "sub"), shared_top / "link-closed")
    os.symlink("open/sub", shared_top / "link-open")
    cases = ["open", "closed", "closed/sub", "search-only", "search-only/sub", "others-only",
             "link-closed", "link-open"]
    for rel in cases:
        path = shared_top / rel
        try:
            access = check_listable(str(path), NOBODY)
        except PermissionDenied:
            allowed = False
        else:
            allowed = True
            assert access.identity == LocalRoot(str(path)).identity
        assert allowed == _kernel_says(path), rel
    assert check_listable(str(shared_top / "open" / "sub"), NOBODY).everyone
    assert check_listable(str(shared_top / "search-only" / "sub"), NOBODY).everyone
    assert not check_listable(str(shared_top / "others-only" / "sub"), NOBODY).everyone
    with pytest.raises(NotFound):
        check_listable(str(shared_top / "missing"), NOBODY)
    with pytest.raises(PermissionDenied):
        check_listable(str(shared_top / "closed" / "missing"), NOBODY)  # not even its absence
