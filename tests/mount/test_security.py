"""Nobody reads through the mount what they could not read without it (issue 12), end to end.

A real daemon runs as root (as the systemd unit runs it) with `socket_group = "nogroup"`;
every probe runs as an unprivileged user through `setpriv`: USER is `nobody` (65534, primary
group nogroup, so a socket-group member), OTHER is uid 65533 in the same group (no passwd
entry needed). Covered:
- local datastores show the source's owner, group and modes, and the kernel enforces them
  (a 0600 file, a 0700 directory, an ACL that singles a user out);
- symlinks: inside ones are shown as relative symlinks and resolved by the kernel through the
  mount (so the directories on the way still count); ones to a file outside, to `/`, and `..`
  are not served (ENOENT, skipped in listings, logged once); a directory or file swapped for
  a symlink after it was listed does not escape; devices, FIFOs and sockets are not served;
- datastores attached by a group member are private to them (hidden from others' listings and
  lookups, unreadable, not detachable by others), `--shared` opens them, `list` shows owners,
  and the owner survives a daemon restart; a user's blob datastore is theirs (0400/0500).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite
from tests.support.daemon import (
    NOBODY,
    REPO_ROOT,
    DsmountDaemon,
    as_user,
    clean_env,
    require_fuse,
    running_daemon,
    wait_until,
)

pytestmark = pytest.mark.mount

USER = NOBODY
OTHER = (65533, 65534)
CONFIG = '[daemon]\nsocket_group = "nogroup"\n'
SECRET = b"root-only secret\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_as(user: tuple[int, int], *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*as_user(*user), *cmd], capture_output=True, text=True, timeout=30)


def readable_by(user: tuple[int, int], path: Path) -> str | None:
    """The file's text as `user` reads it through the mount, or None if they cannot."""
    out = run_as(user, "cat", str(path))
    return out.stdout if out.returncode == 0 else None


def listing_of(user: tuple[int, int], path: Path) -> list[str] | None:
    out = run_as(user, "ls", "-1A", str(path))
    return out.stdout.splitlines() if out.returncode == 0 else None


def expect_errno(number: int, fn: Callable[..., object], *args: object) -> None:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == number, f"{fn}{args}: {info.value}"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DsmountDaemon]:
    require_fuse()
    with running_daemon(config_text=CONFIG) as d:
        yield d


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="dsm-sec-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_source(top: Path) -> tuple[Path, Path]:
    """(the datastore's directory, a root-only file outside it)."""
    outside = top / "outside.txt"
    outside.write_bytes(SECRET)
    os.chmod(outside, 0o600)
    src = top / "src"
    (src / "data").mkdir(parents=True)
    (src / "public.txt").write_text("public\n")
    (src / "data" / "a.txt").write_text("a\n")
    (src / "secret.txt").write_bytes(SECRET)
    os.chmod(src / "secret.txt", 0o600)
    (src / "closed").mkdir()
    (src / "closed" / "inside.txt").write_text("inside\n")  # 0644, but in a 0700 directory
    os.chmod(src / "closed", 0o700)
    for d in (src, src / "data"):
        os.chmod(d, 0o755)
    return src, outside


# -- the source's permissions -----------------------------------------------------------------
def test_local_datastore_keeps_the_sources_owners_and_modes(daemon: DsmountDaemon,
                                                            top: Path) -> None:
    src, _ = make_source(top)
    os.chown(src / "data" / "a.txt", 4321, 8765)
    root = daemon.attach_local(unique("perm"), src)
    for rel in ("", "public.txt", "secret.txt", "closed", "data", "data/a.txt"):
        shown, source = os.stat(root / rel), os.stat(src / rel)
        assert (shown.st_mode, shown.st_uid, shown.st_gid) == (
            source.st_mode, source.st_uid, source.st_gid), rel
    # The same user reads the world-readable files, and not the others.
    assert readable_by(USER, root / "public.txt") == "public\n"
    assert readable_by(USER, root / "data" / "a.txt") == "a\n"
    assert readable_by(USER, root / "secret.txt") is None
    assert readable_by(USER, root / "closed" / "inside.txt") is None
    assert listing_of(USER, root / "closed") is None
    # What USER could not read directly, as a control: the same answers.
    assert readable_by(USER, src / "secret.txt") is None
    assert readable_by(USER, src / "closed" / "inside.txt") is None
    assert (root / "secret.txt").read_bytes() == SECRET  # root still reads everything


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_an_acl_that_singles_a_user_out_is_not_widened(daemon: DsmountDaemon, top: Path) -> None:
    src, _ = make_source(top)
    f = src / "acl.txt"
    f.write_text("acl\n")
    os.chown(f, 0, USER[1])  # group nogroup: USER is in the owning group...
    os.chmod(f, 0o640)
    # ...but a named entry denies USER: user::rw- user:USER:--- group::r-- mask::r-- other::---
    acl = _acl((0x01, 6, 0xFFFFFFFF), (0x02, 0, USER[0]), (0x04, 4, 0xFFFFFFFF),
               (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))
    os.setxattr(f, "system.posix_acl_access", acl)
    assert readable_by(USER, f) is None  # the kernel's verdict on the source itself
    assert readable_by(OTHER, f) == "acl\n"  # another member of the group may read it
    root = daemon.attach_local(unique("acl"), src)
    assert stat.S_IMODE(os.stat(root / "acl.txt").st_mode) == 0o600
    assert readable_by(USER, root / "acl.txt") is None
    assert (root / "acl.txt").read_text() == "acl\n"


# -- symlinks ---------------------------------------------------------------------------------
def test_symlinks_that_leave_the_root_are_not_served(daemon: DsmountDaemon, top: Path) -> None:
    src, outside = make_source(top)
    os.chmod(outside, 0o644)  # even a world-readable file outside is not served
    os.symlink(str(outside), src / "abs-out")
    os.symlink("../outside.txt", src / "rel-out")
    os.symlink("/", src / "slash")
    os.symlink("..", src / "dotdot")
    os.symlink("../../../../../../../../etc/shadow", src / "data" / "deep-out")
    name = unique("links")
    root = daemon.attach_local(name, src)
    names = set(os.listdir(root))
    assert names.isdisjoint({"abs-out", "rel-out", "slash", "dotdot"}), names
    assert "deep-out" not in os.listdir(root / "data")
    for rel in ("abs-out", "rel-out", "slash", "dotdot", "slash/etc/shadow", "dotdot/outside.txt",
                "data/deep-out"):
        expect_errno(errno.ENOENT, os.stat, root / rel)
        expect_errno(errno.ENOENT, os.lstat, root / rel)
        assert readable_by(USER, root / rel) is None
    # Logged once per link, however often it was met.
    log = daemon.log_text()
    assert log.count("rel-out: symbolic link leads outside the datastore") == 1, log[-3000:]
    assert log.count("slash: symbolic link leads outside the datastore") == 1


def test_symlinks_inside_the_root_are_relative_symlinks(daemon: DsmountDaemon, top: Path) -> None:
    src, _ = make_source(top)
    os.symlink("data/a.txt", src / "rel")
    os.symlink(str(src / "data" / "a.txt"), src / "abs")  # absolute, but inside the root
    os.symlink("../public.txt", src / "data" / "up")
    os.symlink("rel", src / "chain")
    os.symlink("data", src / "dirlink")
    os.symlink("closed/inside.txt", src / "peek")  # into a directory USER may not search
    root = daemon.attach_local(unique("inside"), src)
    assert os.readlink(root / "rel") == "data/a.txt"
    assert os.readlink(root / "abs") == "data/a.txt"
    assert os.readlink(root / "data" / "up") == "../public.txt"
    assert os.readlink(root / "chain") == "data/a.txt"  # canonical: straight to the file
    assert os.readlink(root / "dirlink") == "data"
    assert stat.S_ISLNK(os.lstat(root / "rel").st_mode)
    assert (root / "abs").read_text() == "a\n"
    assert readable_by(USER, root / "rel") == "a\n"
    assert readable_by(USER, root / "data" / "up") == "public\n"
    assert readable_by(USER, root / "dirlink" / "a.txt") == "a\n"
    # The kernel resolves the link through the mount: the 0700 directory on the way counts.
    assert readable_by(USER, root / "peek") is None
    assert readable_by(USER, src / "peek") is None  # as it does without the mount
    assert (root / "peek").read_text() == "inside\n"


def test_a_directory_swapped_for_a_symlink_after_listing_does_not_escape(
    daemon: DsmountDaemon, top: Path
) -> None:
    src, outside = make_source(top)
    (top / "elsewhere").mkdir()
    (top / "elsewhere" / "a.txt").write_bytes(SECRET)
    root = daemon.attach_local(unique("swap"), src)
    assert os.listdir(root / "data") == ["a.txt"]
    assert (root / "data" / "a.txt").stat().st_size == 2  # known to the kernel and the daemon
    with open(root / "public.txt", "rb") as kept_open:
        os.rename(src / "data", top / "data.old")
        os.symlink(str(top / "elsewhere"), src / "data")  # the directory, now a link out
        os.unlink(src / "public.txt")
        os.symlink(str(outside), src / "public.txt")  # the file, now a link out
        expect_errno(errno.ENOENT, (root / "data" / "a.txt").read_bytes)
        assert readable_by(USER, root / "data" / "a.txt") is None
        with pytest.raises(OSError):
            kept_open.read()  # the link itself is not a file: EIO
    with pytest.raises(OSError):
        (root / "public.txt").read_bytes()
    assert readable_by(USER, root / "public.txt") is None
    daemon.call("refresh", name=root.name)

    def gone(rel: str) -> bool:
        try:
            os.stat(root / rel)
        except FileNotFoundError:
            return True
        return False

    # The kernel drops what it cached once the daemon's invalidation reaches it.
    for rel in ("data", "data/a.txt", "public.txt"):
        wait_until(lambda rel=rel: gone(rel), 10, f"{rel} to be gone after refresh")
    assert "data" not in os.listdir(root) and "public.txt" not in os.listdir(root)


def test_devices_fifos_and_sockets_are_not_served(daemon: DsmountDaemon, top: Path) -> None:
    src, _ = make_source(top)
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with contextlib.closing(socket.socket(socket.AF_UNIX)) as sock:
        sock.bind(str(src / "sock"))
        os.symlink("null", src / "to-device")
        root = daemon.attach_local(unique("special"), src)
        assert set(os.listdir(root)) == {"public.txt", "secret.txt", "closed", "data"}
        for name in ("fifo", "null", "sock", "to-device"):
            expect_errno(errno.ENOENT, os.stat, root / name)


# -- datastores of users ----------------------------------------------------------------------
def _attach_as(daemon: DsmountDaemon, user: tuple[int, int], name: str, path: Path,
               *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return daemon.cli("attach", name, "--local", str(path), *extra, user=user, check=check)


def _listed(daemon: DsmountDaemon, user: tuple[int, int] | None = None) -> dict[str, dict]:
    out = daemon.cli("list", "--json", user=user)
    return {d["path"]: d for d in json.loads(out.stdout)["datastores"]}


def test_a_group_members_datastore_is_theirs(daemon: DsmountDaemon, top: Path) -> None:
    src, _ = make_source(top)
    name = unique("mine")
    _attach_as(daemon, USER, name, src)
    root = daemon.mountpoint / name
    st = os.stat(root)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o500, USER[0])
    # Its owner reads it (as far as the source's own modes let them)...
    assert name in listing_of(USER, daemon.mountpoint)
    assert readable_by(USER, root / "public.txt") == "public\n"
    assert readable_by(USER, root / "secret.txt") is None
    # ...another user does not even see it, and cannot read, refresh or detach it.
    assert name not in listing_of(OTHER, daemon.mountpoint)
    assert run_as(OTHER, "stat", str(root)).returncode != 0
    assert readable_by(OTHER, root / "public.txt") is None
    assert name not in _listed(daemon, OTHER)
    for op in (("detach", name), ("refresh", name)):
        refused = daemon.cli(*op, user=OTHER, check=False)
        assert refused.returncode != 0 and "not attached" in refused.stderr, refused.stderr
    # The owner is listed, by name, in the table and as JSON.
    entry = _listed(daemon)[name]
    assert (entry["owner"], entry["owner_name"], entry["shared"]) == (USER[0], "nobody", False)
    row = next(line.split() for line in daemon.cli("list").stdout.splitlines()
               if line.split()[0] == name)
    assert row[2] == "nobody(private)"
    assert name in _listed(daemon, USER)
    # Root sees it; its owner detaches it.
    assert name in os.listdir(daemon.mountpoint)
    daemon.cli("refresh", name, user=USER)
    daemon.cli("detach", name, user=USER)
    assert name not in os.listdir(daemon.mountpoint)


def test_shared_makes_it_readable_to_others_but_not_theirs_to_detach(
    daemon: DsmountDaemon, top: Path
) -> None:
    src, _ = make_source(top)
    name = unique("ours")
    _attach_as(daemon, USER, name, src, "--shared")
    root = daemon.mountpoint / name
    assert name in listing_of(OTHER, daemon.mountpoint)
    assert readable_by(OTHER, root / "public.txt") == "public\n"
    assert readable_by(OTHER, root / "secret.txt") is None  # the source's modes still hold
    assert _listed(daemon, OTHER)[name]["owner_name"] == "nobody"
    refused = daemon.cli("detach", name, user=OTHER, check=False)
    assert refused.returncode != 0 and "only its owner or root" in refused.stderr
    assert name in os.listdir(daemon.mountpoint)
    daemon.cli("detach", name)  # root may


def test_users_cannot_override_owners_or_share_what_others_cannot_reach(
    daemon: DsmountDaemon, top: Path
) -> None:
    src, _ = make_source(top)
    refused = _attach_as(daemon, USER, unique("x"), src, "--uid", "0", check=False)
    assert refused.returncode != 0 and "only root may attach with --uid" in refused.stderr
    # A directory USER reaches as "other" but a group could not: private yes, shared no.
    os.chmod(top, 0o701)
    try:
        refused = _attach_as(daemon, USER, unique("x"), src, "--shared", check=False)
        assert refused.returncode != 0 and "cannot be shared" in refused.stderr
        name = unique("ok")
        _attach_as(daemon, USER, name, src)
        daemon.cli("detach", name, user=USER)
    finally:
        os.chmod(top, 0o755)
    refused = _attach_as(daemon, USER, unique("x"), src / "closed", check=False)
    assert refused.returncode != 0 and "cannot read" in refused.stderr


@pytest.mark.azurite
def test_a_users_blob_datastore_is_theirs(daemon: DsmountDaemon, azurite: Azurite,
                                          blob_container: ContainerClient) -> None:
    blob_container.upload_blob("dir/b.txt", b"blob\n")
    name = unique("cloud")
    daemon.cli("attach", name, "--blob", "--container", blob_container.container_name,
               "--connection-string-env", "AZ_CONN", user=USER,
               env={"AZ_CONN": azurite.connection_string})
    root = daemon.mountpoint / name
    for rel, mode in (("", 0o500), ("dir", 0o500), ("dir/b.txt", 0o400)):
        st = os.stat(root / rel)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, USER[0]), rel
    assert readable_by(USER, root / "dir" / "b.txt") == "blob\n"
    assert readable_by(OTHER, root / "dir" / "b.txt") is None
    assert name not in listing_of(OTHER, daemon.mountpoint)
    daemon.cli("detach", name, user=USER)
    shared = unique("cloud")
    daemon.cli("attach", shared, "--blob", "--container", blob_container.container_name,
               "--connection-string-env", "AZ_CONN", "--shared", user=USER,
               env={"AZ_CONN": azurite.connection_string})
    st = os.stat(daemon.mountpoint / shared / "dir" / "b.txt")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o444, USER[0])  # [fs] modes, theirs
    assert readable_by(OTHER, daemon.mountpoint / shared / "dir" / "b.txt") == "blob\n"
    daemon.cli("detach", shared, user=USER)


def test_a_member_by_supplementary_group_is_let_in(daemon: DsmountDaemon, top: Path) -> None:
    # Primary group 65532, nogroup only as a supplementary group: the daemon learns it from the
    # connection itself (SO_PEERGROUPS).
    src, _ = make_source(top)
    name = unique("supp")
    cmd = ["setpriv", "--reuid=65532", "--regid=65532", "--groups=65534", sys.executable, "-m",
           "dsmount", "--socket", str(daemon.socket), "attach", name, "--local", str(src)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                         env=clean_env())
    assert out.returncode == 0, out.stderr
    assert _listed(daemon)[name]["owner"] == 65532
    daemon.cli("detach", name)


def test_the_owner_survives_a_restart(make_daemon: Callable[..., DsmountDaemon],
                                      top: Path) -> None:
    src, _ = make_source(top)
    d = make_daemon(config_text=CONFIG)
    _attach_as(d, USER, "kept", src)
    d.restart()
    entry = _listed(d)["kept"]
    assert (entry["owner"], entry["shared"]) == (USER[0], False)
    assert readable_by(USER, d.mountpoint / "kept" / "public.txt") == "public\n"
    assert readable_by(OTHER, d.mountpoint / "kept" / "public.txt") is None
    assert "kept" not in listing_of(OTHER, d.mountpoint)
