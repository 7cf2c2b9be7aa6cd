"""The datastore registry: persistence, default handling, secrets kept out of every output,
attach specs, versions (on local datastores), and the `dsmount datastore` commands' errors."""

from __future__ import annotations

import os
import stat
import threading
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dsmount.cli.workspace import COMMANDS
from dsmount.errors import AlreadyExists, ConfigError, InvalidRequest, NotFound
from dsmount.workspace import registry as reg
from dsmount.workspace import versions as ver
from dsmount.workspace.entries import CredentialRef, DatastoreInfo
from dsmount.workspace.registry import DATASTORES_FILE, SECRETS_FILE, Registry
from dsmount.workspace.versions import attach_spec_for

# Made-up values in the shapes Azure uses; none is a real secret.
KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3ODkwYWJjZGVmZ2hpams+/w=="
SAS = "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig=AbCdEf0123456789xyz%3D"


def blob(
    name: str, source: str = "stored", ref: str | None = None, kind: str = "account_key"
) -> DatastoreInfo:
    return DatastoreInfo(
        name, "blob", account="acct", container="c", auth=CredentialRef(kind, source, ref)
    )


def local(name: str, path: Path) -> DatastoreInfo:
    return DatastoreInfo(name, "local", path=str(path))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def test_default_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSMOUNT_REGISTRY", str(tmp_path / "r"))
    assert reg.default_registry_dir() == tmp_path / "r"
    monkeypatch.delenv("DSMOUNT_REGISTRY")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert reg.default_registry_dir() == Path("/etc/dsmount/registry")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert reg.default_registry_dir() == tmp_path / "cfg" / "dsmount" / "registry"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert reg.default_registry_dir() == tmp_path / "home/.config/dsmount/registry"


def test_first_registered_is_default_and_order_is_kept(registry: Registry, tmp_path: Path) -> None:
    assert registry.list() == [] and registry.default_name() is None
    assert registry.add(local("b", tmp_path)) is True
    assert registry.add(local("a", tmp_path)) is False
    assert registry.add(local("c", tmp_path), make_default=True) is True
    assert [i.name for i in registry.list()] == ["b", "a", "c"]
    assert registry.default_name() == "c"
    registry.set_default("a")
    assert Registry(registry.dir).default_name() == "a"  # persisted, seen by a new reader


def test_removing_the_default_picks_the_earliest_registered(
    registry: Registry, tmp_path: Path
) -> None:
    for name in ("one", "two", "three"):
        registry.add(local(name, tmp_path))
    registry.set_default("two")
    assert registry.remove("one") == "two"  # not the default: unchanged
    assert registry.remove("two") == "three"
    assert registry.remove("three") is None
    assert registry.list() == [] and registry.default_name() is None
    with pytest.raises(NotFound, match="'three'"):
        registry.remove("three")


def test_name_clash_needs_overwrite(registry: Registry, tmp_path: Path) -> None:
    registry.add(local("data", tmp_path))
    registry.add(local("other", tmp_path))
    with pytest.raises(AlreadyExists, match="'data' is already registered.*overwrite"):
        registry.add(local("data", tmp_path / "x"))
    assert registry.get("data").path == str(tmp_path)
    registry.add(local("data", tmp_path / "x"), overwrite=True)
    assert registry.get("data").path == str(tmp_path / "x")
    assert [i.name for i in registry.list()] == ["data", "other"]  # position kept
    assert registry.default_name() == "data"


def test_unknown_name_lists_the_known_ones(registry: Registry, tmp_path: Path) -> None:
    registry.add(local("cats", tmp_path))
    with pytest.raises(NotFound, match=r"no datastore named 'dogs' is registered \(known: cats"):
        registry.get("dogs")


@pytest.mark.parametrize("name", ["", "a/b", "..", "-x", "x" * 64, "a b", "é"])
def test_invalid_names(registry: Registry, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid datastore name"):
        registry.add(local(name, tmp_path))
    assert not (registry.dir / DATASTORES_FILE).exists()


def test_stored_secret_lives_only_in_the_private_file(registry: Registry) -> None:
    registry.add(blob("cats"), KEY)
    public = (registry.dir / DATASTORES_FILE).read_text()
    assert KEY not in public
    secrets_path = registry.dir / SECRETS_FILE
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(registry.dir.stat().st_mode) == 0o700
    assert tomllib.loads(secrets_path.read_text())["secrets"]["cats"] == KEY
    credential = registry.credential("cats")
    assert credential is not None and credential.secret is not None
    assert credential.secret.reveal() == KEY
    info = registry.get("cats")
    for shown in (repr(info), str(info.public_dict()), info.auth.describe() if info.auth else ""):
        assert KEY not in shown
    # Removing the datastore removes its secret too.
    registry.remove("cats")
    assert "cats" not in tomllib.loads(secrets_path.read_text())["secrets"]


def test_readable_secrets_file_is_refused(registry: Registry) -> None:
    registry.add(blob("cats"), KEY)
    os.chmod(registry.dir / SECRETS_FILE, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        registry.credential("cats")


def test_secret_references_are_resolved_at_use(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.add(blob("by-env", "env", "MY_SAS", kind="sas_token"))
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    registry.add(blob("by-file", "file", str(key_file)))
    assert not (registry.dir / SECRETS_FILE).exists()  # nothing stored
    with pytest.raises(InvalidRequest, match="MY_SAS is not set"):
        registry.credential("by-env")
    monkeypatch.setenv("MY_SAS", SAS)
    cred = registry.credential("by-env")
    assert cred is not None and cred.kind == "sas_token" and cred.secret is not None
    assert cred.secret.reveal() == SAS
    cred = registry.credential("by-file")
    assert cred is not None and cred.secret is not None and cred.secret.reveal() == KEY
    os.chmod(key_file, 0o640)
    with pytest.raises(ConfigError, match="accessible by group/others"):
        registry.credential("by-file")
    assert registry.get("by-env").auth.describe() == (  # type: ignore[union-attr]
        "sas_token (from environment variable MY_SAS)"
    )


def test_overwrite_with_a_reference_drops_the_stored_secret(registry: Registry) -> None:
    registry.add(blob("cats"), KEY)
    registry.add(blob("cats", "env", "K"), overwrite=True)
    assert KEY not in (registry.dir / SECRETS_FILE).read_text()


def test_inconsistent_credential_input_is_refused(registry: Registry) -> None:
    with pytest.raises(InvalidRequest):
        registry.add(blob("cats"))  # stored, but no secret given
    with pytest.raises(InvalidRequest):
        CredentialRef("account_key", "none")
    with pytest.raises(InvalidRequest):
        CredentialRef("azure_ad", "stored")
    with pytest.raises(InvalidRequest, match="container"):
        DatastoreInfo("x", "blob", account="a", auth=CredentialRef("azure_ad")).validate()
    with pytest.raises(InvalidRequest, match="absolute"):
        DatastoreInfo("x", "local", path="rel/dir").validate()


def test_corrupt_registry_files_give_config_errors(registry: Registry) -> None:
    registry.dir.mkdir(parents=True)
    (registry.dir / DATASTORES_FILE).write_text("default = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        registry.list()
    (registry.dir / DATASTORES_FILE).write_text('[datastores.x]\nkind = "cloud"\n')
    with pytest.raises(ConfigError, match="registry entry 'x' is invalid"):
        registry.list()


def test_concurrent_writers_lose_nothing(registry: Registry, tmp_path: Path) -> None:
    names = [f"ds{i}" for i in range(16)]
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            Registry(registry.dir).add(local(name, tmp_path))
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(i.name for i in registry.list()) == sorted(names)
    assert registry.default_name() in names


def test_attach_spec_for_blob_includes_the_secret(registry: Registry) -> None:
    registry.add(
        DatastoreInfo(
            "cats",
            "blob",
            account="acct",
            container="c",
            prefix="p/q",
            endpoint="http://127.0.0.1:1/acct",
            auth=CredentialRef("account_key", "stored"),
        ),
        KEY,
    )
    spec = attach_spec_for("cats", None, registry=registry)
    assert spec == {
        "kind": "blob",
        "account": "acct",
        "container": "c",
        "prefix": "p/q",
        "endpoint": "http://127.0.0.1:1/acct",
        "auth": {"kind": "account_key", "secret": KEY},
    }
    with pytest.raises(NotFound, match="no datastore named 'dogs'"):
        attach_spec_for("dogs", None, registry=registry)


def test_a_read_write_default_survives_the_registry_and_spares_versions(
    registry: Registry, tmp_path: Path
) -> None:
    info = DatastoreInfo("outs", "blob", account="acct", container="c",
                         auth=CredentialRef("account_key", "stored"), read_write=True)
    registry.add(info, KEY)
    assert Registry(registry.dir).get("outs").read_write  # written to and read from the file
    assert attach_spec_for("outs", None, registry=registry)["read_write"] is True
    with pytest.raises(InvalidRequest, match="attached read-only"):
        DatastoreInfo("l", "local", path=str(tmp_path), read_write=True).validate()


def test_versions_of_a_local_datastore(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    reg.register(local("imgs", root), registry=registry)
    assert ver.versions("imgs", registry=registry) == []
    for n, text in ((1, "first"), (2, "second")):
        src = tmp_path / f"src{n}"
        (src / "train").mkdir(parents=True)
        (src / "train" / "a.txt").write_text(text)
        # Unpacked, so each file is an object of its own below the version's directory.
        number, summary = ver.create_version("imgs", src, registry=registry, pack=False)
        assert number == n and summary.files_transferred == 1
    assert ver.versions("imgs", registry=registry) == [1, 2]
    # The contents of SRC_DIR are the version's root.
    assert (root / "_versions/1/train/a.txt").read_text() == "first"
    spec = attach_spec_for("imgs", "2", registry=registry)
    assert spec == {
        "kind": "local",
        "path": str(root),
        "version": "2",
        "immutable": True,
        "manifest": "_versions/2.manifest",
    }
    # A version made before manifests existed (files and N.json only) attaches as it did.
    (root / "_versions/3/train").mkdir(parents=True)
    (root / "_versions/3/train/a.txt").write_text("old")
    (root / "_versions/3.json").write_text('{"version": 3, "files": 1}')
    assert attach_spec_for("imgs", "3", registry=registry) == {
        "kind": "local",
        "path": str(root / "_versions/3"),
        "version": "3",
        "immutable": True,
    }
    (root / "_versions/3.json").unlink()
    assert attach_spec_for("imgs", "latest", registry=registry)["version"] == "2"
    assert attach_spec_for("imgs", "01", registry=registry)["version"] == "1"
    with pytest.raises(NotFound, match=r"'imgs' has no version 3 \(versions: 1, 2\)"):
        attach_spec_for("imgs", "3", registry=registry)
    with pytest.raises(InvalidRequest, match="invalid version"):
        attach_spec_for("imgs", "x", registry=registry)


def test_a_failed_version_number_is_not_reused(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "_versions/1").mkdir(parents=True)  # left by an attempt that never committed
    (root / "_versions/1/partial.txt").write_text("partial")
    reg.register(local("imgs", root), registry=registry)
    assert ver.versions("imgs", registry=registry) == []
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    assert ver.create_version("imgs", src, registry=registry)[0] == 2
    assert ver.versions("imgs", registry=registry) == [2]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidRequest, match="holds no files"):
        ver.create_version("imgs", empty, registry=registry)
    assert ver.versions("imgs", registry=registry) == [2]


def test_register_validates_local_paths(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist.*--create-if-not-exists"):
        reg.register(local("x", tmp_path / "missing"), registry=registry)
    assert not (registry.dir / DATASTORES_FILE).exists()  # nothing half-created
    done = reg.register(
        local("x", tmp_path / "missing"), registry=registry, create_if_not_exists=True
    )
    assert done.created and done.is_default and (tmp_path / "missing").is_dir()
    done = reg.register(local("y", tmp_path / "later"), registry=registry, validate=False)
    assert not done.created and not done.is_default


# -- the CLI ----------------------------------------------------------------------------------
@pytest.fixture
def run_cli(registry: Registry, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DSMOUNT_REGISTRY", str(registry.dir))
    root = click.Group("dsmount")
    for command in COMMANDS:
        root.add_command(command)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(root, list(args), env=env, catch_exceptions=False)

    return run


def one_error_line(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsmount: "), result.stderr
    return lines[0]


def test_cli_register_list_show_default_remove(run_cli, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r = run_cli("datastore", "register-local", "alpha", str(tmp_path / "a"))
    assert r.exit_code == 0 and "[default]" in r.stdout
    assert run_cli("datastore", "register-local", "beta", str(tmp_path / "b")).exit_code == 0
    listing = run_cli("datastore", "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "KIND", "DEFAULT", "LOCATION", "AUTH"]
    assert listing[1].split()[:3] == ["alpha", "local", "*"]
    assert listing[2].split()[:2] == ["beta", "local"] and "*" not in listing[2]
    assert run_cli("datastore", "set-default", "beta").exit_code == 0
    assert "default:        yes" in run_cli("datastore", "show", "beta").stdout
    r = run_cli("datastore", "remove", "beta")
    assert "default datastore is now 'alpha'" in r.stdout
    line = one_error_line(run_cli("datastore", "show", "beta"))
    assert "no datastore named 'beta'" in line


def test_cli_errors_are_one_line_and_create_nothing(
    run_cli, registry: Registry, tmp_path: Path
) -> None:
    line = one_error_line(run_cli("datastore", "register-local", "x", str(tmp_path / "nope")))
    assert "does not exist" in line
    assert not (registry.dir / DATASTORES_FILE).exists()
    (tmp_path / "d").mkdir()
    run_cli("datastore", "register-local", "x", str(tmp_path / "d"))
    line = one_error_line(run_cli("datastore", "register-local", "x", str(tmp_path)))
    assert "already registered" in line
    assert registry.get("x").path == str(tmp_path / "d")
    line = one_error_line(run_cli("upload", "ghost", str(tmp_path / "d")))
    assert "no datastore named 'ghost'" in line
    line = one_error_line(run_cli("upload", "x", str(tmp_path / "missing-src")))
    assert "does not exist" in line
    line = one_error_line(
        run_cli(
            "datastore",
            "register-blob",
            "b",
            "--account",
            "a",
            "--container",
            "c",
            "--account-key-env",
            "UNSET_VAR_XYZ",
        )
    )
    assert "UNSET_VAR_XYZ is not set" in line
    assert [i.name for i in registry.list()] == ["x"]


def test_cli_stored_and_referenced_secrets_never_printed(run_cli, registry: Registry) -> None:
    env = {"K": KEY, "S": SAS}
    r = run_cli(
        "datastore",
        "register-blob",
        "k",
        "--account",
        "acct",
        "--container",
        "c",
        "--account-key-env",
        "K",
        "--skip-validation",
        env=env,
    )
    assert r.exit_code == 0, r.stderr
    r = run_cli(
        "datastore",
        "register-blob",
        "s",
        "--account",
        "acct",
        "--container",
        "c",
        "--sas-token-env",
        "S",
        "--by-reference",
        "--skip-validation",
        env=env,
    )
    assert r.exit_code == 0, r.stderr
    outputs = [
        run_cli("datastore", "list", env=env),
        run_cli("datastore", "list", "--json"),
        run_cli("datastore", "show", "k"),
        run_cli("datastore", "show", "k", "--json"),
        run_cli("datastore", "show", "s", "--json"),
    ]
    for out in outputs:
        assert out.exit_code == 0
        text = out.stdout + out.stderr
        assert KEY not in text and "AbCdEf0123456789" not in text
    assert "stored in the registry" in outputs[2].stdout
    assert registry.get("s").auth == CredentialRef("sas_token", "env", "S")
    r = run_cli(
        "datastore",
        "register-blob",
        "z",
        "--account",
        "acct",
        "--container",
        "c",
        "--account-key-env",
        "K",
        "--sas-token-env",
        "S",
        env=env,
    )
    assert r.exit_code != 0 and "one way to authenticate" in r.stderr
