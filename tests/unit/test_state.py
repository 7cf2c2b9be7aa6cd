"""Tests of the persisted attached-datastore state (dsmount/node/state.py).

Specs survive a save/load round trip; secrets live only in secrets.json (0600) inside a 0700
directory, never in attached.json; a corrupt file loads as an empty state with an error
logged; writes are atomic and leave no temporary files, even when they fail.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from dsmount.node import state as state_mod
from dsmount.node.state import SECRETS_FILE, STATE_FILE, StateStore

SECRET = "AccountKey=c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFr"

SPECS = {
    "data": {"name": "data", "kind": "local", "path": "/srv/data"},
    "imgs/v2": {
        "name": "imgs",
        "version": "v2",
        "kind": "blob",
        "container": "images",
        "account": "acct",
        "auth": {"kind": "key", "secret": SECRET},
    },
    "share": {"name": "share", "kind": "fileshare", "share": "s", "auth": {"kind": "azure_ad"}},
}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.save(SPECS)
    loaded = StateStore(tmp_path / "state").load()  # a new daemon reading it back
    assert sorted(loaded, key=lambda s: s["name"]) == sorted(
        SPECS.values(), key=lambda s: s["name"]
    )


def test_save_does_not_change_the_callers_specs(tmp_path: Path) -> None:
    specs = json.loads(json.dumps(SPECS))
    StateStore(tmp_path).save(specs)
    assert specs == SPECS


def test_secret_only_in_the_private_file(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    StateStore(directory).save(SPECS)
    public = (directory / STATE_FILE).read_text()
    assert SECRET not in public
    assert SECRET in (directory / SECRETS_FILE).read_text()
    assert mode(directory / SECRETS_FILE) == 0o600
    assert mode(directory) == 0o700
    assert not mode(directory / STATE_FILE) & 0o077


def test_existing_open_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    StateStore(directory).save(SPECS)
    assert mode(directory) == 0o700


def test_missing_state_is_empty(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "never-written").load() == []


@pytest.mark.parametrize("name", [STATE_FILE, SECRETS_FILE])
def test_corrupt_file_loads_empty_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    store = StateStore(tmp_path)
    store.save(SPECS)
    (tmp_path / name).write_text('[{"name": "data", "kin')
    with caplog.at_level(logging.ERROR, logger="dsmount.node.state"):
        assert store.load() == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "starting empty" in errors[0] and str(tmp_path) in errors[0]


def test_odd_but_valid_json_is_ignored_entry_by_entry(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps([SPECS["data"], 5, "x", None]))
    assert StateStore(tmp_path).load() == [SPECS["data"]]
    (tmp_path / STATE_FILE).write_text(json.dumps({"not": "a list"}))
    assert StateStore(tmp_path).load() == []


def test_atomic_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for i in range(3):
        store.save({**SPECS, f"extra{i}": {"name": f"extra{i}", "kind": "local", "path": "/x"}})
    assert sorted(os.listdir(tmp_path)) == sorted([STATE_FILE, SECRETS_FILE])


def test_failed_write_keeps_the_old_state_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.save(SPECS)
    before = (tmp_path / STATE_FILE).read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod.os, "fsync", broken_fsync)
    with caplog.at_level(logging.ERROR, logger="dsmount.node.state"):
        store.save({"other": {"name": "other", "kind": "local", "path": "/y"}})
    assert any("No space left" in r.getMessage() for r in caplog.records)
    assert (tmp_path / STATE_FILE).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted([STATE_FILE, SECRETS_FILE])
    monkeypatch.undo()
    assert len(store.load()) == len(SPECS)
