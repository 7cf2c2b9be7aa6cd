"""~/datastores links: dsmount.node.homelink and the docker-stacks before-notebook hook."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from dsmount.errors import AlreadyExists, NotFound
from dsmount.node.homelink import LinkOutcome, _chown_link, home_of, link_home

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "scripts/jupyter/before-notebook.d/10-dsmount-link.sh"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def target(tmp_path: Path) -> Path:
    t = tmp_path / "datastores"
    t.mkdir()
    return t


def test_fresh_home_gets_the_link(home: Path, target: Path) -> None:
    assert link_home(home, target) is LinkOutcome.CREATED
    link = home / "datastores"
    assert link.is_symlink()
    assert os.readlink(link) == str(target)


def test_default_target_is_slash_datastores(home: Path) -> None:
    assert link_home(home) is LinkOutcome.CREATED
    assert os.readlink(home / "datastores") == "/datastores"


def test_custom_name(home: Path, target: Path) -> None:
    assert link_home(home, target, name="data") is LinkOutcome.CREATED
    assert os.readlink(home / "data") == str(target)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_invalid_name_rejected(home: Path, target: Path, name: str) -> None:
    with pytest.raises(ValueError):
        link_home(home, target, name=name)


def test_already_linked_is_a_no_op(home: Path, target: Path) -> None:
    link_home(home, target)
    before = os.lstat(home / "datastores")
    assert link_home(home, target) is LinkOutcome.ALREADY_LINKED
    after = os.lstat(home / "datastores")
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_equivalent_spellings_of_the_target_count_as_linked(home: Path, target: Path) -> None:
    os.symlink(str(target) + "/", home / "datastores")  # trailing slash
    assert link_home(home, target) is LinkOutcome.ALREADY_LINKED
    (home / "datastores").unlink()
    os.symlink(os.path.relpath(target, home), home / "datastores")  # relative
    assert link_home(home, target) is LinkOutcome.ALREADY_LINKED


def test_real_directory_refused(home: Path, target: Path) -> None:
    (home / "datastores").mkdir()
    with pytest.raises(AlreadyExists, match="real directory"):
        link_home(home, target)
    assert (home / "datastores").is_dir() and not (home / "datastores").is_symlink()


def test_regular_file_refused(home: Path, target: Path) -> None:
    (home / "datastores").write_text("notes")
    with pytest.raises(AlreadyExists, match="regular file"):
        link_home(home, target)
    assert (home / "datastores").read_text() == "notes"


def test_foreign_symlink_refused(home: Path, target: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "elsewhere", home / "datastores")
    with pytest.raises(AlreadyExists, match="elsewhere"):
        link_home(home, target)
    assert os.readlink(home / "datastores") == str(tmp_path / "elsewhere")


def test_force_replaces_foreign_symlink(home: Path, target: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "elsewhere", home / "datastores")
    assert link_home(home, target, force=True) is LinkOutcome.REPLACED
    assert os.readlink(home / "datastores") == str(target)


def test_force_replaces_empty_directory(home: Path, target: Path) -> None:
    (home / "datastores").mkdir()
    assert link_home(home, target, force=True) is LinkOutcome.REPLACED
    assert os.readlink(home / "datastores") == str(target)


def test_force_replaces_empty_file(home: Path, target: Path) -> None:
    (home / "datastores").touch()
    assert link_home(home, target, force=True) is LinkOutcome.REPLACED
    assert os.readlink(home / "datastores") == str(target)


def test_force_still_refuses_non_empty_directory(home: Path, target: Path) -> None:
    d = home / "datastores"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    with pytest.raises(AlreadyExists, match="user's data"):
        link_home(home, target, force=True)
    assert (d / "thesis.tex").read_text() == "years of work"


def test_force_still_refuses_non_empty_file(home: Path, target: Path) -> None:
    (home / "datastores").write_text("notes")
    with pytest.raises(AlreadyExists, match="user's data"):
        link_home(home, target, force=True)
    assert (home / "datastores").read_text() == "notes"


def test_special_file_refused_even_with_force(home: Path, target: Path) -> None:
    os.mkfifo(home / "datastores")
    with pytest.raises(AlreadyExists):
        link_home(home, target, force=True)


def test_missing_home_is_not_found(tmp_path: Path, target: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        link_home(tmp_path / "nobody-home", target)
    (tmp_path / "a-file").touch()
    with pytest.raises(NotFound, match="not a directory"):
        link_home(tmp_path / "a-file", target)


@needs_root
def test_owner_applied_to_the_link_not_the_target(home: Path, target: Path) -> None:
    target_owner = (os.stat(target).st_uid, os.stat(target).st_gid)
    assert link_home(home, target, owner=(12345, 23456)) is LinkOutcome.CREATED
    st = os.lstat(home / "datastores")
    assert (st.st_uid, st.st_gid) == (12345, 23456)
    assert (os.stat(target).st_uid, os.stat(target).st_gid) == target_owner


@needs_root
def test_owner_corrected_on_an_existing_link(home: Path, target: Path) -> None:
    link_home(home, target)  # root-owned
    assert link_home(home, target, owner=(12345, 23456)) is LinkOutcome.ALREADY_LINKED
    st = os.lstat(home / "datastores")
    assert (st.st_uid, st.st_gid) == (12345, 23456)


@needs_root
def test_owner_applied_when_replacing(home: Path, target: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "elsewhere", home / "datastores")
    assert link_home(home, target, owner=(12345, 23456), force=True) is LinkOutcome.REPLACED
    assert os.lstat(home / "datastores").st_uid == 12345


@needs_root
def test_chown_refuses_a_name_swapped_for_a_hard_link(home: Path, tmp_path: Path) -> None:
    # The attack link-home must survive: between creating the link and chowning it, the user
    # replaces the name with a hard link to a file they do not own.
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    os.link(victim, home / "datastores")
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(AlreadyExists, match="replaced"):
            _chown_link(fd, home / "datastores", "datastores", (12345, 23456))
    finally:
        os.close(fd)
    assert os.stat(victim).st_uid == 0


def test_home_of_known_user() -> None:
    pw = pwd.getpwuid(os.getuid())
    assert home_of(pw.pw_name) == (Path(pw.pw_dir), pw.pw_uid, pw.pw_gid)


def test_home_of_unknown_user() -> None:
    with pytest.raises(NotFound, match="no-such-user-dsmount"):
        home_of("no-such-user-dsmount")


# --- the docker-stacks before-notebook hook -------------------------------------------------


def run_hook(env: dict[str, str], path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    """Source the hook the way docker-stacks' start.sh does (set -e on), then prove the shell
    carried on and that the hook left no functions behind."""
    script = (
        f'set -euo pipefail\nsource "{HOOK}"\necho "status=$?"\n'
        'declare -F | grep -c dsmount || true\necho "still-running"\n'
    )
    path = "/usr/bin:/bin"
    if path_prefix is not None:
        path = f"{path_prefix}:{path}"
    return subprocess.run(
        ["bash", "-c", script],
        env={"PATH": path, "HOME": "/root", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def hook_env(home: Path, target: Path, **extra: str) -> dict[str, str]:
    return {
        "NB_USER": "nobody",
        "DSMOUNT_LINK_HOME": str(home),
        "DSMOUNT_LINK_TARGET": str(target),
        **extra,
    }


def assert_hook_survived(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["status=0", "0", "still-running"], result.stdout


def test_hook_creates_the_link(home: Path, target: Path) -> None:
    result = run_hook(hook_env(home, target))
    assert_hook_survived(result)
    assert os.readlink(home / "datastores") == str(target)
    assert "linked" in result.stderr
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        assert os.lstat(home / "datastores").st_uid == nobody.pw_uid


def test_hook_is_idempotent(home: Path, target: Path) -> None:
    assert_hook_survived(run_hook(hook_env(home, target)))
    result = run_hook(hook_env(home, target))
    assert_hook_survived(result)
    assert "already points" in result.stderr


def test_hook_refuses_real_directory_but_notebook_still_starts(home: Path, target: Path) -> None:
    d = home / "datastores"
    d.mkdir()
    (d / "work.ipynb").write_text("{}")
    for extra in ({}, {"DSMOUNT_LINK_FORCE": "1"}):
        result = run_hook(hook_env(home, target, **extra))
        assert_hook_survived(result)
        assert "WARNING" in result.stderr
        assert (d / "work.ipynb").read_text() == "{}"


def test_hook_foreign_symlink_needs_force(home: Path, target: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "elsewhere", home / "datastores")
    result = run_hook(hook_env(home, target))
    assert_hook_survived(result)
    assert "DSMOUNT_LINK_FORCE" in result.stderr
    assert os.readlink(home / "datastores") == str(tmp_path / "elsewhere")
    assert_hook_survived(run_hook(hook_env(home, target, DSMOUNT_LINK_FORCE="1")))
    assert os.readlink(home / "datastores") == str(target)


def test_hook_force_replaces_empty_directory(home: Path, target: Path) -> None:
    (home / "datastores").mkdir()
    assert_hook_survived(run_hook(hook_env(home, target, DSMOUNT_LINK_FORCE="1")))
    assert os.readlink(home / "datastores") == str(target)


def test_hook_skips_when_target_missing(home: Path, tmp_path: Path) -> None:
    result = run_hook(hook_env(home, tmp_path / "not-mounted"))
    assert_hook_survived(result)
    assert "not present" in result.stderr
    assert not os.path.lexists(home / "datastores")


def test_hook_can_be_disabled(home: Path, target: Path) -> None:
    assert_hook_survived(run_hook(hook_env(home, target, DSMOUNT_LINK="0")))
    assert not os.path.lexists(home / "datastores")


def test_hook_prefers_dsmount_link_home(home: Path, target: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "args"
    fake = bindir / "dsmount"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    fake.chmod(0o755)
    assert_hook_survived(run_hook(hook_env(home, target, DSMOUNT_LINK_FORCE="1"), bindir))
    args = record.read_text().splitlines()
    assert args[:5] == ["link-home", "--home", str(home), "--target", str(target)]
    assert "--force" in args
    assert ("--user" in args) == (os.geteuid() == 0)
    if "--user" in args:
        assert args[args.index("--user") + 1] == "nobody"
    assert not os.path.lexists(home / "datastores")  # the fake did nothing: no fallback ran


def test_hook_survives_a_failing_dsmount(home: Path, target: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "dsmount"
    fake.write_text("#!/bin/sh\necho 'refused' >&2\nexit 3\n")
    fake.chmod(0o755)
    result = run_hook(hook_env(home, target), bindir)
    assert_hook_survived(result)
    assert "link-home failed" in result.stderr
