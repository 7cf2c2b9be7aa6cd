"""The rules of `dsmount doctor` (dsmount/node/doctor.py), each with the facts that trip it.

The same checks are run through real conditions (a killed daemon, a stopped Azurite, an
expired SAS token, a low cgroup limit) in tests/mount/test_doctor.py.
"""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from dsmount.node.doctor import (
    SAS_WARN_WITHIN,
    Check,
    check_allow_other,
    check_call,
    check_clock_skew,
    check_free_space,
    check_fuse_device,
    check_fusermount,
    check_memory,
    check_mountpoint,
    check_owned_path,
    check_proxy,
    check_sas,
    exit_code,
    sas_expiry,
    shown_proxy,
)

MiB = 1024**2
GiB = 1024**3
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_exit_code_fails_only_on_errors() -> None:
    ok = Check("a", "x", "ok", "fine")
    warn = Check("b", "x", "warning", "hm", "do this")
    err = Check("c", "x", "error", "bad", "do that")
    assert exit_code([ok, warn]) == 0
    assert exit_code([ok, warn, err]) == 1
    assert Check.from_dict(err.as_dict()) == err
    assert Check.from_dict({"status": "bogus"}).status == "error"


def test_fuse_device_and_fusermount() -> None:
    assert check_fuse_device("/dev/fuse", True, True, True).status == "ok"
    missing = check_fuse_device("/dev/fuse", False, False, False)
    assert missing.status == "error" and "modprobe fuse" in (missing.fix or "")
    assert check_fuse_device("/dev/fuse", True, False, True).status == "error"
    assert check_fuse_device("/dev/fuse", True, True, False).status == "error"
    assert check_fusermount("/usr/bin/fusermount3", True, False).status == "ok"
    assert check_fusermount(None, False, True).status == "warning"
    assert check_fusermount(None, False, False).status == "error"
    not_setuid = check_fusermount("/usr/bin/fusermount3", False, False)
    assert not_setuid.status == "error" and "chmod u+s" in (not_setuid.fix or "")


def test_allow_other_matters_for_a_user_daemon_and_for_jupyter_links() -> None:
    conf = "# mount_max = 1000\nuser_allow_other\n"
    assert check_allow_other(conf, False, []).status == "ok"
    assert check_allow_other("#user_allow_other\n", True, []).status == "ok"
    user_daemon = check_allow_other("#user_allow_other\n", False, [])
    assert user_daemon.status == "error" and "user_allow_other" in (user_daemon.fix or "")
    links = check_allow_other(None, True, ["/home/jovyan/datastores"])
    assert links.status == "warning" and "/home/jovyan/datastores" in links.detail


@pytest.mark.parametrize(
    ("fstype", "err", "answered", "daemon", "status", "words"),
    [
        ("fuse.dsmount", None, True, True, "ok", "answering"),
        ("fuse.dsmount", errno.ENOTCONN, True, False, "error", "transport endpoint"),
        ("fuse.dsmount", errno.ECONNABORTED, True, False, "error", "stale"),
        ("fuse.dsmount", errno.EIO, True, False, "error", "EIO"),
        ("fuse.dsmount", None, False, False, "error", "does not answer"),
        ("fuse.dsmount", None, True, False, "warning", "control socket"),
        (None, None, True, False, "error", "nothing is mounted"),
        (None, None, True, True, "error", "although the daemon answers"),
        ("ext4", None, True, False, "error", "ext4"),
    ],
)
def test_mountpoint(fstype: str | None, err: int | None, answered: bool, daemon: bool,
                    status: str, words: str) -> None:
    check = check_mountpoint("/datastores", fstype, err, answered, daemon)
    assert check.status == status
    assert words in check.detail
    if err == errno.ENOTCONN:
        assert "fusermount3 -u -z /datastores" in (check.fix or "")


def test_owned_paths() -> None:
    def owned(**kw: object) -> Check:
        args: dict = dict(exists=True, kind_ok=True, uid=0, mode=0o40700, daemon_uid=0,
                          private_bits=0o077, kind="directory")
        args.update(kw)
        return check_owned_path("state directory", "/var/lib/dsmount", **args)

    assert owned().status == "ok"
    assert owned(exists=False).status == "error"
    assert owned(kind_ok=False).status == "error"
    wrong_owner = owned(uid=1000)
    assert wrong_owner.status == "error" and "chown 0" in (wrong_owner.fix or "")
    readable = owned(mode=0o40755)
    assert readable.status == "warning" and readable.fix == "chmod 700 /var/lib/dsmount"
    assert owned(mode=0o40777).status == "error"  # others may write: replace the state


def test_memory_budget_against_the_limit() -> None:
    assert check_memory(512 * MiB, 8 * GiB, "cgroup memory limit 8 GiB").status == "ok"
    assert check_memory(7 * GiB, 8 * GiB, "cgroup memory limit 8 GiB").status == "warning"
    over = check_memory(2 * GiB, 1 * GiB, "cgroup memory limit 1 GiB (/sys/fs/cgroup/x)")
    assert over.status == "error" and "memory_budget" in (over.fix or "")
    assert "/sys/fs/cgroup/x" in over.detail


def test_free_space() -> None:
    assert check_free_space("disk cache", "/c", 50 * GiB, 10 * GiB, 0).status == "ok"
    assert check_free_space("disk cache", "/c", 5 * GiB, 10 * GiB, 0).status == "warning"
    # What is already used counts as room the cache has.
    assert check_free_space("disk cache", "/c", 5 * GiB, 10 * GiB, 6 * GiB).status == "ok"
    assert check_free_space("staging", "/s", 10 * MiB, 10 * GiB, 0).status == "error"
    assert check_free_space("staging", "/s", 0, 0, 0).status == "error"


def test_call() -> None:
    assert check_call("d", 0.004, None).detail == "answered in 4.0 ms"
    assert check_call("d", 0.25, None).status == "ok"
    assert check_call("d", 3.0, None).status == "warning"
    failed = check_call("d", 0.01, "connection refused")
    assert failed.status == "error" and "connection refused" in failed.detail


def test_sas_expiry_is_read_from_se() -> None:
    token = "sv=2023-11-03&se=2026-12-10T08%3A30%3A00Z&sr=c&sp=rl&sig=abc%2Bdef"
    assert sas_expiry(token) == datetime(2026, 12, 10, 8, 30, tzinfo=UTC)
    assert sas_expiry("?se=2026-12-10&sig=x") == datetime(2026, 12, 10, tzinfo=UTC)
    assert sas_expiry("sv=1&sig=x") is None
    assert sas_expiry("se=tomorrow&sig=x") is None


def test_sas_check_warns_within_a_week_and_fails_when_expired() -> None:
    assert check_sas("d", NOW + timedelta(days=30), NOW).status == "ok"
    soon = check_sas("d", NOW + timedelta(days=3), NOW)
    assert soon.status == "warning" and "3.0 days" in soon.detail
    assert check_sas("d", NOW + SAS_WARN_WITHIN, NOW).status == "warning"
    assert "hours" in check_sas("d", NOW + timedelta(hours=5), NOW).detail
    expired = check_sas("d", NOW - timedelta(minutes=1), NOW)
    assert expired.status == "error" and "expired" in expired.detail
    assert check_sas("d", None, NOW).status == "warning"


def test_clock_skew() -> None:
    t = NOW.timestamp()
    header = format_datetime(NOW, usegmt=True)
    assert check_clock_skew("d", header, t - 0.1, t + 0.1).status == "ok"
    assert check_clock_skew("d", header, t - 120, t - 119.8).status == "warning"
    behind = check_clock_skew("d", header, t - 3600, t - 3599.9)
    assert behind.status == "error" and "behind" in behind.detail
    ahead = check_clock_skew("d", header, t + 1800, t + 1800.1)
    assert ahead.status == "error" and "ahead" in ahead.detail
    unknown = check_clock_skew("d", None, t, t, "connection refused")
    assert unknown.status == "warning" and "connection refused" in unknown.detail
    assert check_clock_skew("d", "not a date", t, t).status == "warning"


def test_proxy_route() -> None:
    url = "https://acct.blob.core.windows.net"
    assert check_proxy("d", url, {}, False).status == "ok"
    proxy = {"HTTPS_PROXY": "http://user:pw@proxy.corp:3128"}
    via = check_proxy("d", url, proxy, False)
    assert via.status == "ok" and "proxy.corp:3128" in via.detail
    assert "pw" not in via.detail and "user" not in via.detail
    failed = check_proxy("d", url, proxy, True)
    assert failed.status == "warning" and "NO_PROXY" in (failed.fix or "")
    bypassed = check_proxy("d", url, {**proxy, "NO_PROXY": ".core.windows.net"}, True)
    assert bypassed.status == "ok" and "NO_PROXY covers" in bypassed.detail
    # A local endpoint (Azurite, a private endpoint) through a proxy is almost always wrong.
    local = check_proxy("d", "http://127.0.0.1:10000/devstoreaccount1",
                        {"http_proxy": "http://proxy:3128"}, False)
    assert local.status == "warning" and "127.0.0.1" in (local.fix or "")
    # HTTP_PROXY does not apply to https URLs: said when the call failed.
    other = check_proxy("d", url, {"HTTP_PROXY": "http://proxy:3128"}, True)
    assert other.status == "warning" and "HTTPS_PROXY" in (other.fix or "")
    # Lower case wins, as in urllib and the SDKs.
    both = check_proxy("d", url, {"HTTPS_PROXY": "http://upper:1", "https_proxy":
                                  "http://lower:2"}, False)
    assert "lower:2" in both.detail


def test_shown_proxy_never_shows_user_info() -> None:
    assert shown_proxy("http://alice:s3cret@p.example:8080") == "http://p.example:8080"
    assert shown_proxy("p.example:3128") == "http://p.example:3128"


def test_jupyter_links_are_found_in_tmpfiles_rules_and_homes(tmp_path) -> None:
    from dsmount.node.doctor_node import jupyter_links

    tmpfiles = tmp_path / "tmpfiles.d"
    tmpfiles.mkdir()
    (tmpfiles / "dsmount-jupyter.conf").write_text(
        "# comment\nL      /home/jovyan/datastores     -    -    -     -   /datastores\n")
    (tmpfiles / "other.conf").write_text("d /run/x 0755 root root -\n")
    homes = tmp_path / "home"
    (homes / "ann").mkdir(parents=True)
    (homes / "ann" / "datastores").symlink_to("/datastores/")
    (homes / "bob").mkdir()
    (homes / "bob" / "datastores").symlink_to("/elsewhere")
    found = jupyter_links("/datastores", home_root=str(homes), tmpfiles=str(tmpfiles))
    assert str(tmpfiles / "dsmount-jupyter.conf") in found
    assert str(homes / "ann" / "datastores") in found
    assert not any("bob" in f or "other.conf" in f for f in found)
    assert jupyter_links("/mnt/else", home_root=str(homes), tmpfiles=str(tmpfiles)) == [
        f for f in found if "before-notebook" in f]


def test_free_bytes_measures_the_nearest_existing_directory(tmp_path) -> None:
    from dsmount.node.doctor_node import free_bytes, statvfs_errno

    where, free = free_bytes(str(tmp_path / "not" / "yet" / "made"))
    assert where == str(tmp_path) and free > 0
    assert statvfs_errno(str(tmp_path)) == (True, None)
    assert statvfs_errno(str(tmp_path / "missing")) == (True, errno.ENOENT)
