"""What the block cache fetches from: one object version, by byte range.

The fetcher's `PinnedSource` is the real one (disk cache, else a ranged GET pinned to the
ETag); tests give the cache their own. Kept apart from the cache so the interface reads on
its own.
"""

from __future__ import annotations

ObjectKey = tuple[int, str, str]  # (datastore id, path, etag or "")


class Source:
    """One object version and how to fetch byte ranges of it (the fetcher's subclass does).

    One per open file handle, so it is small: three slots and methods, no closures."""

    __slots__ = ("key", "size", "unit")

    def __init__(self, key: ObjectKey, size: int, unit: int) -> None:
        self.key = key
        self.size = size
        self.unit = unit  # no fetch crosses a multiple of it: the block size

    async def fetch(self, start: int, end: int) -> bytes:
        """Exactly the bytes [start, end)."""
        raise NotImplementedError

    def stored(self, start: int, end: int) -> None:
        """Told when the extent [start, end) got cached (e.g. to write a disk block)."""
