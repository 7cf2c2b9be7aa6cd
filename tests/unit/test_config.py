"""Tests of the typed daemon configuration (dsmount/node/config.py).

Sizes parse and format consistently; a valid TOML file loads into typed sections; every kind
of mistake (unknown section or key, wrong type, bad size, a budget smaller than four blocks,
a named file that does not exist) is a ConfigError whose message names the offending key;
command-line overrides beat the file; $DSMOUNT_CONFIG picks the file when no path is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsmount.errors import ConfigError
from dsmount.node import config as config_mod
from dsmount.node.config import load_config
from dsmount.shared.sizes import format_size, parse_size

KIB = 1024
UNITS = {
    "": 1,
    "B": 1,
    "K": KIB,
    "KB": KIB,
    "KiB": KIB,
    "k": KIB,
    "M": KIB**2,
    "MiB": KIB**2,
    "mib": KIB**2,
    "G": KIB**3,
    "GiB": KIB**3,
    "T": KIB**4,
    "TiB": KIB**4,
}


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the machine's /etc/dsmount nor the caller's environment may leak in."""
    monkeypatch.delenv("DSMOUNT_CONFIG", raising=False)
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def write(tmp_path: Path, text: str, name: str = "dsmount.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@given(
    n=st.integers(0, 10**6), unit=st.sampled_from(sorted(UNITS)), space=st.sampled_from(["", " "])
)
def test_parse_size_units(n: int, unit: str, space: str) -> None:
    assert parse_size(f"{n}{space}{unit}") == n * UNITS[unit]


def test_parse_size_fractions_and_ints() -> None:
    assert parse_size("1.5GiB") == 3 * KIB**3 // 2
    assert parse_size("0.5k") == 512
    assert parse_size(4096) == 4096
    assert parse_size(" 8 MiB ") == 8 * KIB**2


@pytest.mark.parametrize("bad", ["", "lots", "-5", "8 XiB", "1e3", "MiB", "8MiBs", True, -1])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)  # type: ignore[arg-type]


@given(n=st.integers(0, 4 * KIB**4))
def test_format_size_round_trips_within_rounding(n: int) -> None:
    text = format_size(n)
    back = parse_size(text)
    if n < KIB:
        assert text == f"{n} B" and back == n
    else:
        assert abs(back - n) <= 0.05 * n  # one decimal of a unit >= 1


def test_load_valid_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[daemon]
mountpoint = "/mnt/ds"
log_level = "debug"

[fs]
uid = 1000
file_mode = "0440"

[cache]
memory_budget = "256MiB"
block_size = "4MiB"
max_concurrent_gets = 8

[metadata]
ttl = 30
negative_ttl = 1.5

[retry]
request_deadline = 20

[[datastore]]
name = "data"
kind = "local"
path = "/srv/data"
""",
    )
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.daemon.mountpoint == "/mnt/ds" and cfg.daemon.log_level == "debug"
    assert cfg.fs.uid == 1000 and cfg.fs.file_mode == 0o440
    assert cfg.cache.memory_budget == 256 * KIB**2 and cfg.cache.block_size == 4 * KIB**2
    assert cfg.cache.max_concurrent_gets == 8
    assert cfg.metadata.ttl == 30.0 and isinstance(cfg.metadata.ttl, float)
    assert cfg.metadata.negative_ttl == 1.5
    assert cfg.retry.request_deadline == 20.0
    assert cfg.datastores == ({"name": "data", "kind": "local", "path": "/srv/data"},)
    # Untouched keys keep their defaults.
    assert cfg.daemon.socket == config_mod.DaemonSection().socket


def test_no_file_gives_defaults() -> None:
    cfg = load_config()
    assert cfg == config_mod.Config()
    assert cfg.source is None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[bogus]\nx = 1\n", ["bogus"]),
        ("[cache]\nmemory_budgt = 1\n", ["memory_budgt"]),
        ('[cache]\nmax_concurrent_gets = "many"\n', ["max_concurrent_gets"]),
        ("[cache]\nmax_concurrent_gets = 1.5\n", ["max_concurrent_gets"]),
        ('[fs]\nuid = "root"\n', ["uid"]),
        ("[fs]\nuid = -1\n", ["uid"]),
        ('[fs]\nfile_mode = "rw"\n', ["file_mode"]),
        ('[fs]\nfile_mode = "17777"\n', ["file_mode"]),
        ("[daemon]\nmountpoint = 5\n", ["mountpoint"]),
        ('[daemon]\nlog_level = "loud"\n', ["log_level"]),
        ("[metadata]\nttl = true\n", ["ttl"]),
        ("[metadata]\nttl = -1\n", ["ttl"]),
        ('[cache]\nmemory_budget = "lots"\n', ["memory_budget"]),
        ('[cache]\nblock_size = "8XB"\n', ["block_size"]),
        ('[cache]\nblock_size = "1KiB"\n', ["block_size"]),
        ('[cache]\nblock_size = "8MiB"\nmemory_budget = "24MiB"\n', ["memory_budget"]),
        ("[retry]\nmax_attempts = 0\n", ["max_attempts"]),
        ("daemon = 5\n", ["daemon"]),
        ('[[datastore]]\nname = "x"\n', ["datastore", "kind"]),
        ("datastore = 3\n", ["datastore"]),
    ],
)
def test_bad_file_is_a_config_error_naming_the_key(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for name in names:
        assert name in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[cache\nblock_size = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_explicit_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_budget_exactly_four_blocks_is_enough(tmp_path: Path) -> None:
    path = write(tmp_path, '[cache]\nblock_size = "1MiB"\nmemory_budget = "4MiB"\n')
    assert load_config(path).cache.memory_budget == 4 * KIB**2


def test_overrides_from_flags_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[cache]\nblock_size = "1MiB"\nmemory_budget = "64MiB"\n'
        '[daemon]\nmountpoint = "/from/file"\n',
    )
    cfg = load_config(
        path,
        overrides={
            "cache": {"memory_budget": "128MiB", "block_size": None},  # None: flag not given
            "daemon": {"mountpoint": "/from/flag"},
            "retry": {},
        },
    )
    assert cfg.cache.memory_budget == 128 * KIB**2
    assert cfg.cache.block_size == KIB**2  # the file's value: the flag was not given
    assert cfg.daemon.mountpoint == "/from/flag"


def test_overrides_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, '[cache]\nblock_size = "1MiB"\n')
    with pytest.raises(ConfigError, match="memory_budget"):
        load_config(path, overrides={"cache": {"memory_budget": "2MiB"}})
    with pytest.raises(ConfigError, match="max_concurrent_gets"):
        load_config(path, overrides={"cache": {"max_concurrent_gets": "x"}})


def test_dsmount_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, '[daemon]\nmountpoint = "/from/env"\n', "env.toml")
    monkeypatch.setenv("DSMOUNT_CONFIG", str(env_file))
    cfg = load_config()
    assert cfg.daemon.mountpoint == "/from/env" and cfg.source == str(env_file)
    # An explicit path beats the environment.
    explicit = write(tmp_path, '[daemon]\nmountpoint = "/explicit"\n', "explicit.toml")
    assert load_config(explicit).daemon.mountpoint == "/explicit"
    # A variable naming a missing file is an error, not a silent fallback to defaults.
    monkeypatch.setenv("DSMOUNT_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match="gone.toml"):
        load_config()


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('name = "x"\nkind = "blob"\naccount = "a"', "container"),
        ('name = "x"\nkind = "local"\npath = "relative/dir"', "absolute"),
        ('name = "x"\nkind = "s3"\ncontainer = "b"', "kind"),
        ('name = "x"\nkind = "blob"\ncontainer = "c"\ncontianer = "typo"', "contianer"),
        ('name = "x"\nkind = "fileshare"\nshare = "s"\nprefix = "../up"', "prefix"),
    ],
)
def test_a_bad_datastore_entry_is_refused_at_load_naming_the_field(
    tmp_path: Path, entry: str, named: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[[datastore]]\n{entry}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "'x'" in str(info.value) and named in str(info.value)
