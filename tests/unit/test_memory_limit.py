"""The memory limit and the default cache budget (`dsmount.node.memory_limit`), on fake cgroup
trees: the tightest limit of the cgroup and its ancestors wins, "max" is no limit, v1 works,
and a budget the limit cannot hold is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsmount.errors import ConfigError
from dsmount.node.memory_limit import (
    MemoryLimit,
    cgroup_limit,
    choose_budget,
    effective_limit,
    physical_memory,
)

GiB = 1024**3
MiB = 1024**2


def _write(root: Path, rel: str, name: str, value: str) -> None:
    d = root / rel.strip("/")
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(value + "\n")


def test_the_tightest_limit_on_the_way_to_the_root_wins(tmp_path: Path) -> None:
    _write(tmp_path, "kubepods/pod1", "memory.max", str(3 * GiB))
    _write(tmp_path, "kubepods/pod1/ctr", "memory.max", "max")
    _write(tmp_path, "kubepods", "memory.max", str(8 * GiB))
    found = cgroup_limit(str(tmp_path), "0::/kubepods/pod1/ctr\n")
    assert found is not None
    assert found.bytes == 3 * GiB and found.source == "cgroup"
    assert found.path == str(tmp_path / "kubepods/pod1/memory.max")


def test_no_limit_anywhere_means_physical_memory(tmp_path: Path) -> None:
    _write(tmp_path, "a", "memory.max", "max")
    assert cgroup_limit(str(tmp_path), "0::/a\n") is None
    limit = effective_limit(str(tmp_path), "0::/a\n")
    assert limit == MemoryLimit(physical_memory(), "physical")
    # Unreadable or odd content is "no limit there", never a failure.
    _write(tmp_path, "b", "memory.max", "garbage")
    assert cgroup_limit(str(tmp_path), "0::/b\n") is None
    assert cgroup_limit(str(tmp_path / "missing"), "0::/b\n") is None


def test_cgroup_v1_memory_controller(tmp_path: Path) -> None:
    _write(tmp_path, "memory/docker/abc", "memory.limit_in_bytes", str(GiB))
    _write(tmp_path, "memory", "memory.limit_in_bytes", str(9223372036854771712))  # unlimited
    found = cgroup_limit(str(tmp_path), "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n")
    assert found is not None and found.bytes == GiB


def test_a_limit_above_physical_memory_is_no_limit(tmp_path: Path) -> None:
    _write(tmp_path, "big", "memory.max", str(physical_memory() * 4))
    assert effective_limit(str(tmp_path), "0::/big\n").source == "physical"


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(2 * GiB, 512 * MiB), (64 * GiB, GiB), (256 * MiB, 64 * MiB), (100 * MiB, 32 * MiB)],
)
def test_the_default_is_a_quarter_of_the_limit_capped_at_1gib(limit: int, expected: int) -> None:
    chosen = choose_budget(0, 8 * MiB, MemoryLimit(limit, "cgroup", "/x/memory.max"))
    assert chosen.budget == expected and not chosen.configured
    shown = chosen.describe()
    assert shown["limit_bytes"] == limit and shown["limit_source"] == "cgroup"
    assert "/x/memory.max" in str(shown["limit"])


def test_a_budget_the_limit_cannot_hold_is_refused() -> None:
    limit = MemoryLimit(2 * GiB, "cgroup", "/x/memory.max")
    assert choose_budget(GiB, 8 * MiB, limit).budget == GiB
    with pytest.raises(ConfigError, match="not below the cgroup memory limit 2.0 GiB"):
        choose_budget(3 * GiB, 8 * MiB, limit)
    with pytest.raises(ConfigError, match="too small for 4 blocks"):
        choose_budget(0, 8 * MiB, MemoryLimit(48 * MiB, "cgroup"))
