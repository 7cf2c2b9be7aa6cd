"""The default cache budget follows the daemon's memory limit, through a real daemon pointed at
a fake cgroup tree (DSMOUNT_CGROUP_ROOT): `status` names the limit it used, reads go through
a cache of that budget, and a configured budget above the limit is refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import DsmountDaemon

pytestmark = [pytest.mark.mount]

GiB = 1024**3


def fake_cgroup(root: Path, limit: int) -> Path:
    """A cgroup tree in which this process's own (v2) cgroup has memory.max = `limit`; the
    daemon, our child, is in the same cgroup."""
    own = "/"
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            own = line[3:]
    where = root / own.strip("/")
    where.mkdir(parents=True, exist_ok=True)
    (where / "memory.max").write_text(f"{limit}\n")
    return where / "memory.max"


def test_default_budget_is_a_quarter_of_the_cgroup_limit(
    make_daemon, tmp_path: Path
) -> None:
    memory_max = fake_cgroup(tmp_path / "cgroup", 2 * GiB)
    daemon: DsmountDaemon = make_daemon(env={"DSMOUNT_CGROUP_ROOT": str(tmp_path / "cgroup")})
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"x" * 100_000)
    root = daemon.attach_local("local", src)
    assert (root / "f.bin").read_bytes() == b"x" * 100_000

    status = daemon.call("status")
    assert status["cache"]["budget_bytes"] == 512 * 1024**2
    memory = status["memory"]
    assert memory["limit_source"] == "cgroup" and memory["limit_bytes"] == 2 * GiB
    assert memory["limit_path"] == str(memory_max)
    text = daemon.cli("status").stdout
    assert "budget 512.0 MiB (default" in text and "cgroup memory limit 2.0 GiB" in text


def test_a_configured_budget_above_the_cgroup_limit_is_refused_at_start(tmp_path: Path) -> None:
    from tests.support.daemon import require_fuse

    require_fuse()
    fake_cgroup(tmp_path / "cgroup", 2 * GiB)
    daemon = DsmountDaemon(
        config_text='[cache]\nmemory_budget = "3GiB"\n',
        env={"DSMOUNT_CGROUP_ROOT": str(tmp_path / "cgroup")},
    )
    try:
        daemon.start(wait=False)
        assert daemon.wait_exit(20) == 1
        log = daemon.log_text()
        assert "memory_budget 3.0 GiB is not below the cgroup memory limit 2.0 GiB" in log
        assert "Traceback" not in log
        assert not daemon.is_mounted()
    finally:
        daemon.cleanup()
