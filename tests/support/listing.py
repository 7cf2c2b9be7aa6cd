"""Test helpers shared by the backend tests (blob, file share): reading a whole listing."""

from __future__ import annotations

from dsmount.storage.base import Backend, Entry


async def collect(backend: Backend, path: str) -> dict[str, Entry]:
    """Every entry of directory `path`, by name, over all pages; fails on a name listed twice."""
    entries: dict[str, Entry] = {}
    async for page in backend.list(path):
        for entry in page:
            assert entry.name not in entries, f"duplicate entry {entry.name!r}"
            entries[entry.name] = entry
    return entries
