"""Cached directory listings and negative lookups, with per-datastore TTLs.

A listing is cached only once complete, so a lookup answered from it is authoritative
(a name missing from a fresh, complete listing does not exist). Memory is bounded by the total
number of cached entries, not the number of directories, so one 100k-entry directory cannot
hide behind a "number of listings" limit. Listings of a local namespace (a version's manifest,
`Backend.local_namespace`) have a budget of their own, much smaller: sqlite answers them again
in microseconds, so they are kept only to make a warm listing of a big directory instant, and a
`find` of a million-file version does not leave a million Entries here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cachetools

from dsmount.storage.base import Entry

MAX_CACHED_ENTRIES = 2_000_000  # ~ a few hundred MB worst case; listings evicted LRU beyond it
MAX_NEGATIVE = 100_000
MAX_LOCAL_ENTRIES = 32_768  # of local-namespace listings: a 20,000-entry directory fits


@dataclass(slots=True)
class Listing:
    entries: dict[str, Entry]
    time: float


def _listing_size(listing: Listing) -> int:
    return len(listing.entries) + 1


class MetadataCache:
    def __init__(self) -> None:
        self._listings: cachetools.LRUCache[tuple[int, str], Listing] = cachetools.LRUCache(
            maxsize=MAX_CACHED_ENTRIES, getsizeof=_listing_size
        )
        self._local: cachetools.LRUCache[tuple[int, str], Listing] = cachetools.LRUCache(
            maxsize=MAX_LOCAL_ENTRIES, getsizeof=_listing_size
        )
        self._negative: cachetools.LRUCache[tuple[int, str], float] = cachetools.LRUCache(
            maxsize=MAX_NEGATIVE
        )

    def listing(self, ds_id: int, path: str, ttl: float, now: float) -> Listing | None:
        key = (ds_id, path)
        listing = self._listings.get(key) or self._local.get(key)
        if listing is None:
            return None
        if now - listing.time > ttl:
            self._listings.pop(key, None)
            self._local.pop(key, None)
            return None
        return listing

    def put_listing(self, ds_id: int, path: str, entries: dict[str, Entry], now: float,
                    *, local: bool = False) -> None:
        """Cache the complete listing of `path`; `local`: of a local namespace (its own,
        smaller budget)."""
        cache = self._local if local else self._listings
        if len(entries) + 1 <= cache.maxsize:
            cache[(ds_id, path)] = Listing(entries, now)

    def is_negative(self, ds_id: int, path: str, now: float) -> bool:
        expiry = self._negative.get((ds_id, path))
        if expiry is None:
            return False
        if now >= expiry:
            self._negative.pop((ds_id, path), None)
            return False
        return True

    def put_negative(self, ds_id: int, path: str, ttl: float, now: float) -> None:
        if ttl > 0:
            self._negative[(ds_id, path)] = now + ttl

    def put_entry(self, ds_id: int, parent: str, entry: Entry) -> None:
        """A name created or changed in `parent` by this node: a cached listing of it says so
        at once (and a negative lookup of it is forgotten)."""
        listing = self._listings.get((ds_id, parent)) or self._local.get((ds_id, parent))
        if listing is not None:
            listing.entries[entry.name] = entry
        self._negative.pop((ds_id, f"{parent}/{entry.name}" if parent else entry.name), None)

    def remove_entry(self, ds_id: int, parent: str, name: str) -> None:
        """A name removed from `parent` by this node."""
        listing = self._listings.get((ds_id, parent)) or self._local.get((ds_id, parent))
        if listing is not None:
            listing.entries.pop(name, None)

    def drop(self, ds_id: int, path: str | None = None) -> int:
        """Forget listings and negative entries of a datastore, or of `path` and below."""

        def doomed(key: tuple[int, str]) -> bool:
            if key[0] != ds_id:
                return False
            if not path:
                return True
            return key[1] == path or key[1].startswith(path + "/")

        n = 0
        for cache in (self._listings, self._local, self._negative):
            for key in [k for k in cache if doomed(k)]:
                cache.pop(key, None)
                n += 1
        # The parent's listing names `path`; drop it too so a changed size is re-read.
        if path:
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            for listings in (self._listings, self._local):
                if listings.pop((ds_id, parent), None) is not None:
                    n += 1
        return n
