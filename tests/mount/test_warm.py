"""`dsmount warm` through the real CLI, a real daemon and a real Azurite: warm, stop Azurite,
then read every warmed file through the mount (sha256 right); into memory and into the disk
cache; idempotent (a second warm downloads nothing and sends no request); what does not fit
is named; Ctrl-C cancels cleanly and a re-run completes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite
from tests.support.daemon import REPO_ROOT, DsmountDaemon, clean_env, wait_until
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

MiB = 1024 * 1024


def make_files(seed: int, small: int, big: int = 0) -> dict[str, bytes]:
    r = random.Random(seed)
    files = {f"d{i % 3}/sub{i % 2}/f{i:03d}.bin": r.randbytes(r.randrange(1, 300_000))
             for i in range(small)}
    if big:
        files["big/blob.bin"] = r.randbytes(big)
    return files


def upload(container: ContainerClient, files: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: container.upload_blob(kv[0], kv[1]), files.items()))


def attach(daemon: DsmountDaemon, name: str, container: str, conn: str) -> Path:
    daemon.cli("attach", name, "--blob", "--container", container,
               "--connection-string-env", "CS", env={"CS": conn})
    return daemon.mountpoint / name


def warm_json(daemon: DsmountDaemon, *args: str, check: bool = True) -> dict:
    result = daemon.cli("warm", *args, "--json", check=check, timeout=180)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stderr
    return lines[-1]


def check_all(root: Path, files: dict[str, bytes]) -> None:
    def digest(rel: str) -> str:
        return hashlib.sha256((root / rel).read_bytes()).hexdigest()

    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(files, pool.map(digest, files), strict=True))
    for rel, data in files.items():
        assert got[rel] == hashlib.sha256(data).hexdigest(), rel


def requests(daemon: DsmountDaemon, name: str) -> int:
    (ds,) = [d for d in daemon.call("status")["datastores"] if d["name"] == name]
    return int(ds["backend_requests"])


def test_warm_into_memory_then_read_everything_with_azurite_stopped(
    make_daemon: Callable[..., DsmountDaemon], make_azurite: Callable[..., Azurite]
) -> None:
    server = make_azurite()
    service = server.blob_service_client()
    container = service.create_container("warmmem")
    files = make_files(1, 40, big=5 * MiB + 77)
    upload(container, files)
    service.close()
    daemon = make_daemon(config_text='[cache]\nblock_size = "1MiB"\nmemory_budget = "64MiB"\n')
    root = attach(daemon, "w", "warmmem", server.connection_string)

    done = warm_json(daemon, "w")
    total = sum(len(v) for v in files.values())
    assert done["state"] == "done" and done["target"] == "memory"
    assert (done["files_total"], done["files_done"]) == (len(files), len(files))
    assert done["bytes_done"] == done["bytes_total"] == total
    assert done["bytes_fetched"] == total and done["errors"] == 0
    assert done["rate_bytes_per_s"] > 0 and not done["listing"]
    # Warming is not reading: no FUSE reads counted, no stalls.
    (ds,) = daemon.call("status")["datastores"]
    assert ds["bytes_read"] == 0 and ds["read_stall_seconds"]["count"] == 0

    # Idempotent: nothing downloaded again, not even a listing request.
    before = requests(daemon, "w")
    again = warm_json(daemon, "w")
    assert again["state"] == "done" and again["bytes_fetched"] == 0
    assert again["files_cached"] == len(files)
    assert requests(daemon, "w") == before

    server.stop()
    check_all(root, files)
    seen = {str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs}
    assert seen == set(files)
    (ds,) = daemon.call("status")["datastores"]
    assert ds["bytes_read"] >= total and ds["read_stall_seconds"]["count"] == 0
    assert requests(daemon, "w") == before  # every byte came from the cache


def test_warm_into_the_disk_cache_serves_reads_with_the_backend_down(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite,
    blob_container: ContainerClient, tmp_path: Path,
) -> None:
    files = make_files(2, 30, big=6 * MiB + 5)
    upload(blob_container, files)
    # 4 MiB of memory cannot hold 13 MiB: the reads below come from the disk cache.
    daemon = make_daemon(config_text=(
        '[cache]\nblock_size = "1MiB"\nmemory_budget = "4MiB"\n'
        f'disk_dir = "{tmp_path / "disk"}"\ndisk_budget = "64MiB"\n'
        "[retry]\nrequest_deadline = 3\nattempt_timeout = 1\n"))
    with FaultProxy(azurite.host, azurite.blob_port) as proxy:
        root = attach(daemon, "d", blob_container.container_name,
                      proxy.connection_string_for(azurite.connection_string))
        done = warm_json(daemon, "d", "d0", "big")  # two of the paths
        wanted = {k: v for k, v in files.items() if k.startswith(("d0/", "big/"))}
        assert done["state"] == "done" and done["target"] == "disk"
        assert done["files_done"] == len(wanted)
        assert done["bytes_fetched"] == sum(len(v) for v in wanted.values())
        disk = daemon.call("status")["disk_cache"]
        assert disk["used_bytes"] >= done["bytes_fetched"]

        proxy.down()
        check_all(root, wanted)
        # A file that was not warmed cannot be read now: the backend really is down.
        other = next(k for k in files if k.startswith("d1/"))
        with pytest.raises(OSError):
            (root / other).read_bytes()
        assert daemon.call("status")["disk_cache"]["hits"] > 0


def test_what_does_not_fit_in_memory_is_named_and_bad_input_is_refused(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite, blob_container: ContainerClient
) -> None:
    files = make_files(3, 0, big=3 * MiB)
    files.update({f"more/{i}.bin": random.Random(i).randbytes(2 * MiB) for i in range(3)})
    upload(blob_container, files)
    daemon = make_daemon(config_text='[cache]\nblock_size = "1MiB"\nmemory_budget = "8MiB"\n')
    attach(daemon, "s", blob_container.container_name, azurite.connection_string)
    result = daemon.cli("warm", "s")
    assert result.returncode == 0
    assert "into memory" in result.stderr and "no disk cache" in result.stderr
    assert "do not fit" in result.stdout and "disk_dir" in result.stdout
    job = daemon.call("status")["warm"]["jobs"][-1]
    assert job["files_not_fitting"] >= 1 and job["bytes_done"] <= 6 * MiB

    missing = daemon.cli("warm", "nosuch", check=False)
    assert missing.returncode == 1 and "nosuch" in missing.stderr
    bad = daemon.cli("warm", "s", "../etc", check=False)
    assert bad.returncode == 1 and ".." in bad.stderr
    gone = daemon.cli("warm", "s", "no/such/dir", check=False)
    assert gone.returncode == 1 and "no/such/dir" in gone.stderr
    assert daemon.alive()  # a failed job never takes the daemon with it


def test_ctrl_c_cancels_without_harm_and_a_rerun_completes(
    make_daemon: Callable[..., DsmountDaemon], azurite: Azurite, blob_container: ContainerClient
) -> None:
    files = make_files(4, 60)
    upload(blob_container, files)
    daemon = make_daemon(config_text='[cache]\nblock_size = "1MiB"\nmemory_budget = "64MiB"\n')
    with FaultProxy(azurite.host, azurite.blob_port) as proxy:
        root = attach(daemon, "c", blob_container.container_name,
                      proxy.connection_string_for(azurite.connection_string))
        proxy.delay(0.05)  # slow enough to interrupt in the middle
        cmd = [sys.executable, "-m", "dsmount", "--socket", str(daemon.socket), "warm", "c",
               "--parallel", "2"]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=clean_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            def running_job() -> dict | None:
                jobs = daemon.call("status")["warm"]["jobs"]
                return next((j for j in jobs if j["files_done"] >= 2), None)

            wait_until(running_job, 30, "the warm job to make progress")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err
        assert "cancelled" in err
        (job,) = daemon.call("status")["warm"]["jobs"]
        assert job["state"] == "cancelled" and job["files_done"] < len(files)
        assert daemon.alive()
        proxy.clear()
        done = warm_json(daemon, "c")
        assert done["state"] == "done" and done["files_done"] == len(files)
        assert done["files_cached"] >= job["files_done"]  # what the first run did stays
        check_all(root, files)


def test_only_the_owner_or_root_warms_and_sees_the_job(
    make_daemon: Callable[..., DsmountDaemon]
) -> None:
    import shutil
    import tempfile

    from tests.support.daemon import NOBODY

    other = (65533, 65534)
    top = Path(tempfile.mkdtemp(prefix="dsm-warm-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        for name in ("shared", "mine"):
            (top / name).mkdir()
            os.chmod(top / name, 0o755)
            for i in range(5):
                (top / name / f"{i}.bin").write_bytes(os.urandom(50_000))
                os.chmod(top / name / f"{i}.bin", 0o644)
        daemon = make_daemon(config_text='[daemon]\nsocket_group = "nogroup"\n')
        daemon.attach_local("rootds", top / "shared")
        refused = daemon.cli("warm", "rootds", user=NOBODY, check=False)
        assert refused.returncode == 1 and "only its owner or root may warm" in refused.stderr
        daemon.cli("attach", "mine", "--local", str(top / "mine"), user=NOBODY)
        mine = json.loads(daemon.cli("warm", "mine", "--json", user=NOBODY).stdout
                          .splitlines()[-1])
        assert mine["state"] == "done" and mine["files_done"] == 5
        # Another user neither warms it nor sees its job; root sees every job.
        assert daemon.cli("warm", "mine", user=other, check=False).returncode == 1
        seen = json.loads(daemon.cli("status", "--json", user=other).stdout)["warm"]["jobs"]
        assert seen == []
        by_root = daemon.call("status")["warm"]["jobs"]
        assert [j["job"] for j in by_root] == [mine["job"]]
    finally:
        shutil.rmtree(top, ignore_errors=True)
