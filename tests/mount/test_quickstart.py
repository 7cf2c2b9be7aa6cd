"""scripts/quickstart.sh end to end: Azurite, the demo dataset uploaded and versioned, the
version and the live container mounted and read (every byte checked by the script), status;
then `stop` leaves no process, no mount and no demo directory behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.azurite_fixture import skip_or_fail_without_azurite
from tests.support.daemon import REPO_ROOT, clean_env, mount_entries, require_fuse

pytestmark = [pytest.mark.mount, pytest.mark.azurite]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone in all but name; /proc says which.
    status = Path(f"/proc/{pid}/status").read_text()
    return "\nState:\tZ" not in status


def test_quickstart_shows_the_main_job_and_stop_leaves_nothing(tmp_path: Path) -> None:
    require_fuse()
    skip_or_fail_without_azurite()
    demo = tmp_path / "demo"
    env = clean_env({"DSMOUNT_DEMO_DIR": str(demo), "DSMOUNT_PYTHON": sys.executable,
                     "QUICKSTART_SKIP_INSTALL": "1"})
    script = [str(REPO_ROOT / "scripts" / "quickstart.sh")]
    try:
        run = subprocess.run(["bash", *script], env=env, capture_output=True, text=True,
                             timeout=600, check=False)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out
        pids = [int((demo / name).read_text()) for name in ("daemon.pid", "azurite.pid")]
        assert all(_alive(pid) for pid in pids)
        mnt = demo / "datastores"
        assert sorted(os.listdir(mnt)) == ["demo", "demo-live"]
        assert "attached demo/1 (blob)" in out and "attached demo-live (blob)" in out
        assert out.count("every byte matches the source") == 3, out  # 2 epochs + the container
        assert "demo/1     ok" in out and "demo-live  ok" in out  # dsmount status
        assert "try next" in out
    finally:
        stop = subprocess.run(["bash", *script, "stop"], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "nothing left" in stop.stdout
    assert not any(_alive(pid) for pid in pids)
    assert mount_entries(demo / "datastores") == []
    assert not demo.exists()
