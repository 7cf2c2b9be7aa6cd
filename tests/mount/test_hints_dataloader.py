"""The DataLoader sampler wrapper with real torch, through a real mount (see test_hints.py for
the setup: Azurite behind 10 ms per request, its own log counting GETs).

torch comes from the `torch` fixture when a test runs, not at import, so an environment with
only the `[test]` extra still collects this module. CI installs torch (scripts/install-deps.sh,
the `torch` extra) and fails here without it, as it does with DSMOUNT_REQUIRE_TORCH=1; elsewhere
the tests skip.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType

import pytest

from dsmount.api import HintingSampler
from tests.mount.test_hints import WINDOW, Mounted, blob_data, make_mounted, settled, sha
from tests.support.azurite import Azurite
from tests.support.daemon import DsmountDaemon

pytestmark = [pytest.mark.mount, pytest.mark.azurite]

N = 120


class Files:
    """Index -> (index, sha256 of the file's bytes), read in the worker processes: a map-style
    dataset, which DataLoader takes without subclassing torch's Dataset."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str]:
        with open(self.paths[i], "rb") as f:
            return i, hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def torch() -> ModuleType:
    if os.environ.get("CI") or os.environ.get("DSMOUNT_REQUIRE_TORCH") == "1":
        return importlib.import_module("torch")
    return pytest.importorskip("torch")


@pytest.fixture
def mounted(make_azurite: Callable[..., Azurite],
            make_daemon: Callable[..., DsmountDaemon]) -> Iterator[Mounted]:
    files = {f"train/s{i:04d}.jpg": blob_data(7000 + i) for i in range(N)}
    with make_mounted(make_azurite, make_daemon, files) as m:
        yield m


def epoch(loader: Iterable, dataset: Files, m: Mounted) -> list[int]:
    """The indices one pass of `loader` yielded, each checked against the file's bytes."""
    seen: list[int] = []
    for indices, digests in loader:
        for i, digest in zip(indices.tolist(), digests, strict=True):
            name = dataset.paths[i].split("/ds/", 1)[1]
            assert digest == sha(m.files[name]), name
            seen.append(i)
    return seen


def test_dataloader_with_workers_reads_the_hinted_epochs(torch: ModuleType,
                                                          mounted: Mounted) -> None:
    names = sorted(mounted.files)
    dataset = Files(mounted.paths(names))
    generator = torch.Generator().manual_seed(0)
    sampler = HintingSampler(torch.utils.data.RandomSampler(dataset, generator=generator),
                             lambda i: dataset.paths[i], socket=str(mounted.daemon.socket))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=2)
    for _ in range(2):
        seen = epoch(loader, dataset, mounted)
        assert sorted(seen) == list(range(N))
        assert sampler.last_hint is not None and sampler.last_hint["files"] == N
        settled(mounted)
    gets = mounted.gets()
    assert set(gets) == set(names) and all(n == 1 for n in gets.values())
    p = mounted.prefetch()
    assert p["hints_ended"] == {"done": 2}
    # The first epoch fetched ahead of the workers; the second found everything cached.
    assert p["hints"]["files_used"] >= N - WINDOW
    assert p["hints"]["files_wasted"] == 0


def test_one_rank_per_gpu_each_hints_its_own_indices(torch: ModuleType,
                                                      mounted: Mounted) -> None:
    names = sorted(mounted.files)
    dataset = Files(mounted.paths(names))
    data = torch.utils.data
    samplers = [HintingSampler(data.DistributedSampler(dataset, num_replicas=2, rank=r, seed=3),
                               lambda i: dataset.paths[i], caller=f"rank {r}",
                               socket=str(mounted.daemon.socket)) for r in range(2)]
    loaders = [data.DataLoader(dataset, batch_size=4, sampler=s, num_workers=2) for s in samplers]
    iterators = [iter(loader) for loader in loaders]  # both ranks' epochs start: two hints
    assert mounted.prefetch()["hints_active"] == 2
    seen: list[int] = []
    for it in iterators:
        for indices, digests in it:
            for i, digest in zip(indices.tolist(), digests, strict=True):
                assert digest == sha(mounted.files[names[i]])
                seen.append(i)
    assert sorted(seen) == list(range(N))  # the ranks' shards cover the set once
    p = settled(mounted)
    assert p["hints_ended"] == {"done": 2}
    gets = mounted.gets()
    assert set(gets) == set(names) and all(n == 1 for n in gets.values())
    order = list(iter(samplers[0].sampler))
    random.Random(0).shuffle(order)  # a sampler is a plain iterable: no torch needed to wrap
    assert len(samplers[0]) == N // 2
