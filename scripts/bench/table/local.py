"""The `local-disk` column: the small files in a plain directory on the benchmark's disk, read
the way row 18 reads dsmount's disk cache (page cache dropped, 8 threads, the same shuffle).
It is the reference for the disk-cache epoch: what the node's own disk gives."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from scripts.bench.harness.batch import Figure
from scripts.bench.table.mounts import MountClient


class LocalDiskClient(MountClient):
    name = "local-disk"
    measures_rss = False

    @property
    def root(self) -> Path:
        return self.dir / "files"

    def setup(self) -> None:
        made: set[Path] = set()
        for i in range(self.ds.scale.n_small):
            path = self.root / self.ds.small_name(i)
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(self.ds.small_content(i))
        os.sync()

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def workloads(self) -> list[tuple[str, Callable[[], float | Figure]]]:
        return [("disk_epoch_per_s",
                 lambda: self.read_files(self.root, self.ctx.shuffle4, cold=True))]
