"""Datastores as a workspace, end to end: the real CLI (subprocesses), a real daemon with its
FUSE mount, blob containers in a real Azurite.

Covers the issue's "Done means": register with a key, a SAS token and a connection string,
and no secret in any output; default handling; versions 1 and 2 each mounted with their own
content at MOUNT/NAME/N; upload then download round-trips a tree byte for byte, and a second
upload transfers nothing; `dsmount run` with one reference of each kind around a real Python
script, its exit status propagated; clear one-line errors that leave nothing half-created.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from tests.support.azurite import Azurite
from tests.support.daemon import REPO_ROOT, DsmountDaemon, clean_env
from tests.support.trees import make_tree, sha256_file

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

WRONG_KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpams+/w=="

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def dsmount_daemon(make_daemon: Callable[..., DsmountDaemon]) -> DsmountDaemon:
    """A daemon whose mount takes writes: `dsmount run --mount-rw` is tested here too."""
    return make_daemon(config_text="[writes]\nenabled = true\n")


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def dsm(dsmount_daemon: DsmountDaemon, registry_dir: Path, azurite: Azurite) -> Cli:
    """Run `dsmount ARGS` against the test daemon and a private registry."""

    def run(
        *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full_env = clean_env(
            {
                "DSMOUNT_REGISTRY": str(registry_dir),
                "AZ_KEY": Azurite.KEY,
                "AZ_CONN": azurite.connection_string,
                **(env or {}),
            }
        )
        cmd = [sys.executable, "-m", "dsmount", "--socket", str(dsmount_daemon.socket), *args]
        result = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"dsmount {' '.join(args)} failed ({result.returncode}):\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\n"
                f"daemon log:\n{dsmount_daemon.log_tail()}"
            )
        return result

    return run


@pytest.fixture
def container(azurite: Azurite) -> Iterator[str]:
    """A container name that does not exist yet (deleted after the test if created)."""
    name = f"w-{uuid.uuid4().hex[:12]}"
    yield name
    service = azurite.blob_service_client()
    try:
        if service.get_container_client(name).exists():
            service.delete_container(name)
    finally:
        service.close()


def register_blob(
    dsm: Cli,
    name: str,
    container: str,
    azurite: Azurite,
    *auth: str,
    check: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    return dsm(
        "datastore",
        "register-blob",
        name,
        "--account",
        Azurite.ACCOUNT,
        "--container",
        container,
        "--endpoint",
        azurite.blob_endpoint,
        *(auth or ("--account-key-env", "AZ_KEY")),
        *extra,
        check=check,
    )


def one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsmount"), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def sas_for(container: str) -> str:
    return generate_container_sas(
        Azurite.ACCOUNT,
        container,
        account_key=Azurite.KEY,
        permission=ContainerSasPermissions(read=True, list=True, write=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )


# -- registration -----------------------------------------------------------------------------
def test_register_each_auth_style_and_never_show_a_secret(
    dsm: Cli,
    azurite: Azurite,
    dsmount_daemon: DsmountDaemon,
    blob_container: ContainerClient,
    registry_dir: Path,
    tmp_path: Path,
) -> None:
    blob_container.upload_blob("hello.txt", b"hello from azurite\n")
    cname = blob_container.container_name
    sas = sas_for(cname)
    sas_file = tmp_path / "sas"
    sas_file.write_text(sas)
    os.chmod(sas_file, 0o600)
    register_blob(dsm, "bykey", cname, azurite)
    register_blob(dsm, "bysas", cname, azurite, "--sas-token-file", str(sas_file), "--by-reference")
    dsm(
        "datastore",
        "register-blob",
        "byconn",
        "--container",
        cname,
        "--connection-string-env",
        "AZ_CONN",
    )
    sig = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    secrets = [Azurite.KEY, sig, azurite.connection_string]

    outputs = [dsm("datastore", "list"), dsm("datastore", "list", "--json")]
    for name in ("bykey", "bysas", "byconn"):
        outputs += [dsm("datastore", "show", name), dsm("datastore", "show", name, "--json")]
        attached = dsm("attach", name)  # by name: the registry builds the spec
        outputs.append(attached)
        mounted = dsmount_daemon.mountpoint / name / "hello.txt"
        assert mounted.read_bytes() == b"hello from azurite\n"
    outputs += [dsm("list"), dsm("list", "--json"), dsm("status")]
    for out in outputs:
        for secret in secrets:
            assert secret not in out.stdout + out.stderr
    listing = json.loads(outputs[1].stdout)
    assert [(d["name"], d["auth"]["kind"], d["default"]) for d in listing] == [
        ("bykey", "account_key", True),
        ("bysas", "sas_token", False),
        ("byconn", "connection_string", False),
    ]
    # On disk: the public file holds no secret; the stored ones sit in the 0600 file only.
    public = (registry_dir / "datastores.toml").read_text()
    assert all(s not in public for s in secrets)
    secrets_file = registry_dir / "secrets.toml"
    assert secrets_file.stat().st_mode & 0o077 == 0
    stored = tomllib.loads(secrets_file.read_text())["secrets"]
    assert sorted(stored) == ["byconn", "bykey"]  # the SAS stays in its own file


def test_default_handling(dsm: Cli, tmp_path: Path) -> None:
    for name in ("first", "second", "third"):
        (tmp_path / name).mkdir()
        dsm("datastore", "register-local", name, str(tmp_path / name))

    def default() -> list[str]:
        return [
            d["name"] for d in json.loads(dsm("datastore", "list", "--json").stdout) if d["default"]
        ]

    assert default() == ["first"]
    assert "default datastore is now 'third'" in dsm("datastore", "set-default", "third").stdout
    assert default() == ["third"]
    out = dsm("datastore", "remove", "third").stdout
    assert "default datastore is now 'first'" in out  # the earliest registered left
    assert default() == ["first"]
    one_error_line(dsm("datastore", "set-default", "third", check=False), "'third'")
    assert default() == ["first"]


# -- versions ---------------------------------------------------------------------------------
def test_versions_each_mount_their_own_content(
    dsm: Cli, azurite: Azurite, container: str, dsmount_daemon: DsmountDaemon, tmp_path: Path
) -> None:
    register_blob(dsm, "imgs", container, azurite, extra=("--create-if-not-exists",))
    v1 = make_tree(tmp_path / "my_dataset_v1", {"train/a.txt": b"one\n", "val/b.txt": b"b1\n"})
    v2 = make_tree(
        tmp_path / "my_dataset_v2",
        {"train/a.txt": b"two\n", "val/b.txt": b"b2\n", "train/new.bin": 300_001},
    )
    assert "created version 1" in dsm("datastore", "create", "imgs", str(v1)).stdout
    assert "created version 2" in dsm("datastore", "create", "imgs", str(v2)).stdout
    assert dsm("datastore", "versions", "imgs").stdout.split() == ["1", "2"]
    for n, src in ((1, v1), (2, v2)):
        dsm("attach", "imgs", "--version", str(n))
        root = dsmount_daemon.mountpoint / "imgs" / str(n)
        # The contents of SRC_DIR are the version's root: train/, val/ - no my_dataset_vN/.
        assert sorted(os.listdir(root)) == ["train", "val"]
        mounted = {
            p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()
        }
        source = {
            p.relative_to(src).as_posix(): sha256_file(p) for p in src.rglob("*") if p.is_file()
        }
        assert mounted == source
    listing = {d["path"]: d for d in dsmount_daemon.call("list")["datastores"]}
    assert listing["imgs/1"]["immutable"] and listing["imgs/2"]["immutable"]
    one_error_line(
        dsm("attach", "imgs", "--version", "3", check=False), "no version 3", "versions: 1, 2"
    )


# -- upload / download ------------------------------------------------------------------------
def test_upload_download_round_trip_and_second_upload_moves_nothing(
    dsm: Cli, azurite: Azurite, container: str, source_tree: Path, tmp_path: Path
) -> None:
    register_blob(dsm, "trip", container, azurite, extra=("--create-if-not-exists",))
    first = dsm("upload", "trip", str(source_tree), "--target-path", "ds", "--quiet")
    files = [p for p in source_tree.rglob("*") if p.is_file()]
    assert f"uploaded {len(files)} file(s)" in first.stdout
    second = dsm("upload", "trip", str(source_tree), "--target-path", "ds", "--quiet")
    assert f"uploaded 0 file(s), 0 B; {len(files)} unchanged" in second.stdout.replace("0B", "0 B")
    dest = tmp_path / "dest"
    dsm("download", "trip", str(dest), "--prefix", "ds", "--quiet")
    got = {p.relative_to(dest).as_posix(): sha256_file(p) for p in dest.rglob("*") if p.is_file()}
    assert got == {p.relative_to(source_tree).as_posix(): sha256_file(p) for p in files}
    assert not [p for p in dest.rglob("*") if "dsmount-part" in p.name]
    again = dsm("download", "trip", str(dest), "--prefix", "ds", "--quiet")
    assert "downloaded 0 file(s)" in again.stdout


# -- run --------------------------------------------------------------------------------------
SCRIPT = textwrap.dedent("""
    import os, sys
    train, val, out = sys.argv[1:4]
    assert os.environ["DSMOUNT_DATAREFERENCE_RUNDS"] == train, (os.environ, train)
    assert os.environ["DSMOUNT_DATAREFERENCE_VAL"] == val
    assert os.environ["DSMOUNT_DATAREFERENCE_OUT"] == out
    numbers = [int(x) for x in open(os.path.join(train, "numbers.txt"))]
    weights = [int(x) for x in open(os.path.join(val, "weights.txt"))]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "result.txt"), "w") as f:
        f.write(f"{sum(n * w for n, w in zip(numbers, weights))}\\n")
    print("mounted at", train, "downloaded at", val)
    sys.exit(int(os.environ.get("EXIT_WITH", "0")))
""")


def test_run_with_each_reference_kind(
    dsm: Cli, azurite: Azurite, container: str, dsmount_daemon: DsmountDaemon, tmp_path: Path
) -> None:
    register_blob(dsm, "runds", container, azurite, extra=("--create-if-not-exists",))
    v1 = make_tree(tmp_path / "v1", {"train/numbers.txt": b"1\n2\n3\n"})
    dsm("datastore", "create", "runds", str(v1))
    weights = make_tree(tmp_path / "w", {"val/weights.txt": b"10\n100\n1000\n"})
    dsm("upload", "runds", str(weights), "--quiet")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "work" / "out"

    def run(exit_with: int, target: str) -> subprocess.CompletedProcess[str]:
        return dsm(
            "run",
            "--mount",
            "runds:1/train",
            "--download",
            "val@runds/val",
            "--upload",
            f"out@runds/{target}={out}",
            "--",
            sys.executable,
            str(script),
            "{runds}",
            "{val}",
            "{out}",
            check=False,
            env={"EXIT_WITH": str(exit_with)},
        )

    ok = run(0, "results/ok")
    assert ok.returncode == 0, ok.stderr
    assert f"mounted at {dsmount_daemon.mountpoint}/runds/1/train" in ok.stdout
    assert "attached runds/1" in ok.stderr and "detached runds/1" in ok.stderr
    assert "runds/1" not in {d["path"] for d in dsmount_daemon.call("list")["datastores"]}

    failed = run(7, "results/failed")  # a failing command: exit status kept, outputs uploaded
    assert failed.returncode == 7, failed.stderr
    assert "command exited with status 7; uploading its outputs anyway" in failed.stderr
    dest = tmp_path / "results"
    dsm("download", "runds", str(dest), "--prefix", "results", "--quiet")
    assert (dest / "ok/result.txt").read_text() == "3210\n"
    assert (dest / "failed/result.txt").read_text() == "3210\n"

    # A datastore attached before the run is used as is and stays attached after it.
    dsm("attach", "runds", "--version", "1")
    again = run(0, "results/again")
    assert again.returncode == 0, again.stderr
    assert "attached runds/1" not in again.stderr
    assert "runds/1" in {d["path"] for d in dsmount_daemon.call("list")["datastores"]}


def test_run_failures_before_the_command(
    dsm: Cli, tmp_path: Path, dsmount_daemon: DsmountDaemon
) -> None:
    (tmp_path / "d").mkdir()
    dsm("datastore", "register-local", "loc", str(tmp_path / "d"))
    marker = tmp_path / "ran"
    cmd = ("--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    r = dsm("run", "--mount", "ghost", *cmd, check=False)
    assert r.returncode == 125
    one_error_line(r, "no datastore named 'ghost'")
    r = dsm("run", "--mount", "loc/no/such/dir", *cmd, check=False)
    assert r.returncode == 125 and "does not exist" in r.stderr
    assert not marker.exists()  # the command never ran
    assert dsmount_daemon.call("list")["datastores"] == []  # what was attached is detached
    r = dsm("run", "--", "definitely-not-a-command-xyz", check=False)
    assert r.returncode == 127 and "command not found" in r.stderr


# -- errors -----------------------------------------------------------------------------------
def test_clear_errors_leave_nothing_half_created(
    dsm: Cli, azurite: Azurite, blob_container: ContainerClient, registry_dir: Path, tmp_path: Path
) -> None:
    cname = blob_container.container_name
    # Wrong credentials: nothing registered.
    r = dsm(
        "datastore",
        "register-blob",
        "bad",
        "--account",
        Azurite.ACCOUNT,
        "--container",
        cname,
        "--endpoint",
        azurite.blob_endpoint,
        "--account-key-env",
        "WRONG",
        check=False,
        env={"WRONG": WRONG_KEY},
    )
    line = one_error_line(r, "'bad' not registered")
    assert WRONG_KEY not in line
    assert json.loads(dsm("datastore", "list", "--json").stdout) == []
    # A container that does not exist: nothing registered, and it is not created.
    one_error_line(
        register_blob(dsm, "nocont", f"missing-{uuid.uuid4().hex[:8]}", azurite, check=False),
        "does not exist",
        "--create-if-not-exists",
    )
    # Unknown datastore, for every command that takes a name.
    for args in (
        ("attach", "ghost"),
        ("upload", "ghost", str(tmp_path)),
        ("download", "ghost", str(tmp_path / "x")),
        ("datastore", "show", "ghost"),
        ("datastore", "versions", "ghost"),
        ("datastore", "remove", "ghost"),
    ):
        one_error_line(dsm(*args, check=False), "no datastore named 'ghost'")
    assert not (tmp_path / "x").exists()
    # Missing local paths.
    one_error_line(
        dsm("datastore", "register-local", "gone", str(tmp_path / "gone"), check=False),
        "does not exist",
    )
    register_blob(dsm, "good", cname, azurite)
    one_error_line(
        dsm("upload", "good", str(tmp_path / "nothing-here"), check=False), "does not exist"
    )
    # Name clash: the first registration is kept as it was.
    before = (registry_dir / "datastores.toml").read_text()
    one_error_line(
        dsm("datastore", "register-local", "good", str(tmp_path), check=False),
        "already registered",
        "--overwrite",
    )
    assert (registry_dir / "datastores.toml").read_text() == before
    assert [d["name"] for d in json.loads(dsm("datastore", "list", "--json").stdout)] == ["good"]
    assert list(blob_container.list_blobs()) == []  # and nothing was uploaded anywhere


def test_python_api_run_shares_the_implementation(
    dsmount_daemon: DsmountDaemon, registry_dir: Path, tmp_path: Path
) -> None:
    from dsmount.workspace.api import Datastore, Workspace

    ws = Workspace(registry_dir, socket=str(dsmount_daemon.socket))
    data = make_tree(tmp_path / "data", {"in/a.txt": b"api input\n"})
    ds = Datastore.register_local(ws, "apids", data)
    out = tmp_path / "out.txt"
    script = "import sys, shutil; shutil.copy(sys.argv[1] + '/a.txt', sys.argv[2]); sys.exit(3)"
    code = ws.run(
        [
            sys.executable,
            "-c",
            script,
            ds.path("in").as_mount(),
            ds.path("results", data_reference_name="res").as_upload(str(out)),
        ],
        quiet=True,
    )
    assert code == 3
    assert (data / "results/out.txt").read_bytes() == b"api input\n"  # uploaded after the run
    assert dsmount_daemon.call("list")["datastores"] == []  # attached for the run only


def test_run_with_a_read_write_mount_writes_outputs_while_it_runs(
    dsm: Cli, azurite: Azurite, container: str, dsmount_daemon: DsmountDaemon, tmp_path: Path
) -> None:
    register_blob(dsm, "outs", container, azurite, extra=("--create-if-not-exists",))
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys\n"
        "out = sys.argv[1]\n"
        "assert out == os.environ['DSMOUNT_DATAREFERENCE_OUT']\n"
        "for step in range(3):\n"
        "    with open(os.path.join(out, f'ckpt-{step}.bin'), 'wb') as f:\n"
        "        f.write(bytes([step]) * 100000)\n"
        "    # each checkpoint is on the datastore as soon as it is closed\n"
        "    print('written', step, flush=True)\n"
    )
    result = dsm("run", "--mount-rw", "out@outs/runs/42", "--", sys.executable, str(script),
                 "{out}")
    assert "attached outs read-write" in result.stderr and "detached outs" in result.stderr
    service = azurite.blob_service_client()
    try:
        client = service.get_container_client(container)
        for step in range(3):
            blob = client.get_blob_client(f"runs/42/ckpt-{step}.bin")
            assert blob.download_blob().readall() == bytes([step]) * 100000
    finally:
        service.close()
    assert "outs" not in {d["path"] for d in dsmount_daemon.call("list")["datastores"]}
    # Attached read-only by someone else: a read-write mount of it is refused, clearly.
    dsm("attach", "outs")
    refused = dsm("run", "--mount-rw", "outs/runs", "--", "true", check=False)
    one_error_line(refused, "attached read-only")
    assert refused.returncode == 125
