"""Hints on the wire and at the edges: the `hint` request's validation, the permission rule a
prefetch obeys, a long order split into parts under the line limit, a process told apart from
a later one with its pid, and the sampler wrapper when no daemon answers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from dsmount.control.protocol import MAX_LINE, HintRequest, Request
from dsmount.errors import InvalidRequest
from dsmount.node.fs.attributes import Attributes
from dsmount.node.hint_access import ProcessWatch, may
from dsmount.storage.local_access import Reader
from dsmount.workspace.hinting import _parts
from dsmount.workspace.sampler import HintingSampler


def test_a_hint_request_takes_paths_and_refuses_bad_arguments() -> None:
    r = HintRequest.from_args({"paths": ["/d/a", "/d/b"], "caller": "job", "append": True})
    assert (r.paths, r.caller, r.append, r.pid, r.idle_timeout) == (
        ["/d/a", "/d/b"], "job", True, None, None)
    for bad in ({"paths": "/d/a"}, {"paths": [1]}, {"caller": ""}, {"caller": "x" * 201},
                {"pid": 0}, {"pid": True}, {"idle_timeout": 0.5}, {"append": "yes"}):
        with pytest.raises(InvalidRequest):
            HintRequest.from_args(bad)


def attrs(mode: int, uid: int = 1000, gid: int = 100) -> Attributes:
    return Attributes(2, False, 1, 0, stat.S_IFREG | mode, uid, gid, 1.0)


def test_may_follows_the_owner_group_other_classes_and_root_reads_all() -> None:
    owner, member, other = Reader(1000, frozenset()), Reader(7, frozenset({100})), Reader(
        8, frozenset({5}))
    assert may(attrs(0o400), owner, 4) and not may(attrs(0o400), member, 4)
    assert may(attrs(0o040), member, 4) and not may(attrs(0o040), owner, 4)  # owner class only
    assert may(attrs(0o004), other, 4) and not may(attrs(0o440), other, 4)
    assert may(attrs(0o000), Reader(0, frozenset()), 4)


def test_a_long_order_goes_in_parts_under_the_line_limit() -> None:
    paths = [f"/datastores/ds/train/{i:07d}/" + "x" * 80 for i in range(30_000)]
    parts = _parts(paths)
    assert len(parts) > 1 and [p for part in parts for p in part] == paths
    for part in parts:
        line = Request("hint", {"paths": part, "append": True, "caller": "c" * 200}).encode()
        assert len(line) < MAX_LINE


def test_a_process_watch_ends_with_its_process() -> None:
    assert ProcessWatch.of(os.getpid()).alive()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    watch = ProcessWatch.of(child.pid)
    child.wait()
    assert not watch.alive()


def test_the_sampler_wrapper_yields_the_order_unchanged_when_no_daemon_answers(tmp_path
                                                                               ) -> None:
    order = [3, 1, 2, 0]
    sampler = HintingSampler(order, lambda i: f"/datastores/ds/{i}",
                             socket=str(tmp_path / "none.sock"))
    with pytest.warns(RuntimeWarning, match="not hinted"):
        assert list(sampler) == order
    assert list(sampler) == order  # warned once
    assert len(sampler) == 4 and sampler.last_hint is None
