"""Deterministic, position-addressable test content: the bytes at any offset of a "pattern
object" can be computed without holding the object, so multi-GiB blobs are uploaded and
verified in bounded memory, and any read at any offset is checked exactly.

Content of object `seed`: 4 KiB units; unit `u` is its 8-byte index (big-endian) followed by
4,088 bytes taken from a 1 MiB random base at an offset that depends on `u`. So every unit is
different from every other (a block served for the wrong offset, or bytes of another object,
never match), and building 1 GiB costs only slicing and joining.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from functools import lru_cache

UNIT = 4096
_BODY = UNIT - 8
_BASE_SIZE = 1024 * 1024


@lru_cache(maxsize=8)
def _base(seed: int) -> bytes:
    return random.Random(seed).randbytes(_BASE_SIZE + UNIT)


def _unit(base: bytes, u: int) -> bytes:
    start = (u * 2_654_435_761) % _BASE_SIZE
    return u.to_bytes(8, "big") + base[start : start + _BODY]


def pattern_bytes(seed: int, offset: int, length: int) -> bytes:
    """The `length` bytes at `offset` of pattern object `seed`."""
    if length <= 0:
        return b""
    base = _base(seed)
    first, last = offset // UNIT, (offset + length - 1) // UNIT
    data = b"".join(_unit(base, u) for u in range(first, last + 1))
    skip = offset - first * UNIT
    return data[skip : skip + length]


def pattern_chunks(seed: int, size: int, chunk: int = 8 * 1024 * 1024) -> Iterator[bytes]:
    """Pattern object `seed` of `size` bytes, in `chunk`-sized pieces (chunk % UNIT == 0)."""
    assert chunk % UNIT == 0
    for offset in range(0, size, chunk):
        yield pattern_bytes(seed, offset, min(chunk, size - offset))


def pattern_sha256(seed: int, size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern_chunks(seed, size):
        digest.update(piece)
    return digest.hexdigest()
