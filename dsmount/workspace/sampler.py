"""A sampler wrapper for PyTorch's DataLoader that hints each epoch's order to dsmount.

`HintingSampler(sampler, path_of)` wraps any sampler (RandomSampler, DistributedSampler, one
of your own: anything iterable over dataset indices) and a function from an index to the
absolute path of the file that index reads. When an epoch starts (`__iter__`, called by the
DataLoader in the main process before the first batch) it draws the epoch's whole order from
the wrapped sampler, sends the paths to the daemon (`dsmount.workspace.hinting.hint`), and
then yields the same indices. The DataLoader's worker processes open the files; the daemon
fetches ahead of them along the order.

- Worker processes: the order is sent once, from the process that iterates the sampler; the
  workers' opens (same user) consume it.
- One rank per GPU (DistributedSampler): each rank wraps its own sampler and hints its own
  indices; each rank is its own process, so each has its own hint.
- A hint is advice: if the daemon cannot take it (not running, a path outside the mount), the
  epoch runs as it would without, with one warning.

No torch import here, at install or import time: the wrapper only iterates the sampler it is
given, and the DataLoader accepts any iterable with `__len__` as a sampler.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from dsmount.errors import DsmountError
from dsmount.workspace.hinting import hint

log = logging.getLogger(__name__)


class HintingSampler:
    """See the module docstring."""

    def __init__(self, sampler: Any, path_of: Callable[[Any], str | os.PathLike[str]], *,
                 caller: str | None = None, socket: str | None = None) -> None:
        self.sampler = sampler
        self.path_of = path_of
        self.caller = caller
        self.socket = socket
        self.last_hint: dict[str, Any] | None = None  # what the daemon took, last epoch
        self._warned = False

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """Passed on (DistributedSampler reshuffles by epoch)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        order = list(iter(self.sampler))
        try:
            self.last_hint = hint([self.path_of(i) for i in order], caller=self.caller,
                                  socket=self.socket)
        except DsmountError as e:
            self.last_hint = None
            if not self._warned:
                self._warned = True
                warnings.warn(f"dsmount: epoch order not hinted ({e}); reading without",
                              RuntimeWarning, stacklevel=2)
            log.debug("hint failed: %s", e)
        return iter(order)
