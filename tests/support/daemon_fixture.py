"""Pytest plugin: real `dsmount daemon` processes with real FUSE mounts.

Listed in tests/conftest.py `pytest_plugins`. Without /dev/fuse, fusermount3 or root the tests
using these fixtures skip, except in CI or with DSMOUNT_REQUIRE_FUSE=1, where they fail.
Every daemon a fixture started is stopped, its mount removed and its working directory deleted
after the test, even when the test failed; its log is printed (pytest shows it on failure).

Fixtures:
- `dsmount_daemon`: a started daemon with default options, for one test.
- `make_daemon(**kwargs)`: start daemons with special options (`extra_args`, `config_text`,
  `config`, `env`); all are cleaned up after the test.
- `shared_dsmount_daemon`: one daemon per test module, for tests that only read and use
  unique datastore names.
- `source_tree`: the standard dataset (see tests.support.trees.default_tree_spec), built once
  per session; tests must not modify it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import DsmountDaemon, require_fuse, running_daemon
from tests.support.trees import default_tree_spec, make_tree


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., DsmountDaemon]]:
    """A factory of started daemons (keyword arguments as for DsmountDaemon)."""
    require_fuse()
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> DsmountDaemon:
            return stack.enter_context(running_daemon(**kwargs))

        yield make


@pytest.fixture
def dsmount_daemon(make_daemon: Callable[..., DsmountDaemon]) -> DsmountDaemon:
    """A started daemon with default options and its own mountpoint, socket and state."""
    return make_daemon()


@pytest.fixture(scope="module")
def shared_dsmount_daemon() -> Iterator[DsmountDaemon]:
    """One daemon for a whole module (1 MiB blocks so reads span several blocks)."""
    require_fuse()
    with running_daemon(extra_args=["--block-size", "1MiB"]) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The standard source dataset, built once per session. Read-only by convention."""
    return make_tree(tmp_path_factory.mktemp("source") / "tree", default_tree_spec())
