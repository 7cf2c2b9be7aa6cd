"""The write side of the storage interface: an `Upload` is one new version of one object being
written, part by part, and made visible all at once by `commit`.

A backend that can write (`Backend.writable`) hands out uploads with `Backend.begin_upload`;
the filesystem's write path (node/fs/writes.py) decides what to put and when. Each kind maps the
three verbs onto what its service offers:

- blob: `put` stages a block (Put Block), `commit` writes the block list (Put Block List), so
  the blob changes in one request and readers see the old version or the whole new one;
- file share: there is no atomic commit, so a new version is written into a temporary file
  next to the target (`temp_name`) with Create File + Put Range and renamed over the target at
  commit; an append writes in place;
- memory and local (tests, and the same contract in miniature).

Invariants of every Upload:
- Nothing `put` does is visible under the object's name before `commit` returns (except the
  documented in-place append of a file share).
- `commit(parts, size)` is given parts that tile `[start, size)` in offset order, where `start`
  is `kept` when `keep=True` and 0 otherwise; the committed object is `size` bytes: the kept
  prefix of the base version, then the parts. A part may be committed only once per commit.
- `abort` makes a best effort to drop what was staged (a blob's uncommitted blocks expire by
  themselves; a file share's temporary file is deleted), never raises, and says whether it
  left nothing behind.
- Every failure is a `dsmount.errors` error; `Changed` means the base version was replaced
  meanwhile (an append or update would otherwise graft onto the wrong object).
"""

from __future__ import annotations

import abc
import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from dsmount.storage.base import Entry

# Prefix of a file share upload's temporary file. Listings skip such names, and a daemon
# that was killed deletes the ones it left (it journals each before creating it).
TEMP_PREFIX = ".dsmount-tmp."
# Raw bytes of a block id: 6 random bytes (one upload) + 3 of sequence. Ids of one blob must all
# have the same length; 9 bytes give 12 base64 characters without padding, which keeps a Put
# Block List of thousands of appended blocks small.
_NONCE_BYTES = 6
_SEQ_BYTES = 3
BLOCK_ID_RAW = _NONCE_BYTES + _SEQ_BYTES


def temp_name(name: str) -> str:
    """The temporary name of an upload of file `name` (same directory, random, short)."""
    return f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


class BlockIds:
    """Block ids for one upload: unique (a random nonce), all of one length. `raw_length`
    lets an append match the length of the ids a blob already has (a multiple of 3 bytes
    gives base64 without padding)."""

    def __init__(self, raw_length: int = BLOCK_ID_RAW) -> None:
        if raw_length < BLOCK_ID_RAW:
            raise ValueError("block ids need at least 9 raw bytes")
        self.raw_length = raw_length
        self._nonce = secrets.token_bytes(_NONCE_BYTES)
        self._seq = 0

    def next(self) -> str:
        self._seq += 1
        if self._seq >= 1 << (8 * _SEQ_BYTES):
            self._nonce, self._seq = secrets.token_bytes(_NONCE_BYTES), 1
        raw = self._nonce + self._seq.to_bytes(_SEQ_BYTES, "big")
        return base64.b64encode(raw.ljust(self.raw_length, b"\0")).decode("ascii")

    @staticmethod
    def raw_length_for(encoded_length: int) -> int | None:
        """The raw length giving ids of `encoded_length` characters without padding, if any."""
        if encoded_length % 4 or encoded_length * 3 // 4 < BLOCK_ID_RAW:
            return None
        return encoded_length * 3 // 4


@dataclass(frozen=True, slots=True)
class Part:
    """One staged part of an upload: where it goes and the backend's name for it."""

    offset: int
    length: int
    token: str = ""  # a blob's block id; unused by kinds that write in place


class Upload(abc.ABC):
    """One new version of `path` being written (see the module docstring)."""

    path: str
    # Bytes of the base version already in place at the start of the new one without being
    # uploaded again (an append); 0 when the caller must put everything.
    kept: int = 0
    # The largest part `put` accepts in one call.
    max_part: int = 4000 * 1024**2
    # A temporary object this upload created under another name (file shares), for the
    # crash journal; None when nothing is staged under a name.
    temp_path: str | None = None

    @abc.abstractmethod
    async def put(self, offset: int, data: bytes | bytearray | memoryview) -> Part:
        """Stage `data` as the bytes at `offset` of the new version. The caller does not
        change `data` until this returns (an upload may send it without a copy)."""

    @abc.abstractmethod
    async def commit(self, parts: Sequence[Part], size: int, *, keep: bool = True) -> Entry:
        """Make the new version visible under `path`; its Entry (new ETag)."""

    async def commit_whole(self, data: bytes) -> Entry:
        """The whole new version at once (`kept` ignored): a small file in one request where
        the kind can (a blob's Put Blob)."""
        parts = [await self.put(0, data)] if data else []
        return await self.commit(parts, len(data), keep=False)

    async def abort(self) -> bool:
        """Drop what was staged; best effort, never raises. False if something staged under
        a name (`temp_path`) may be left behind."""
        return True


def check_tiling(parts: Sequence[Part], start: int, size: int, what: str) -> None:
    """Raise ValueError unless `parts` tile [start, size) in order (a bug in the caller)."""
    at = start
    for p in parts:
        if p.offset != at or p.length <= 0:
            raise ValueError(f"{what}: parts do not tile the object (gap or overlap at {at})")
        at += p.length
    if at != size:
        raise ValueError(f"{what}: parts end at {at}, the object is {size} bytes")
