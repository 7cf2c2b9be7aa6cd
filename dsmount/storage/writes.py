"""Names the write paths of the cloud kinds give what they stage: the temporary files of a
file share upload (which listings skip and a restarted daemon deletes) and a blob upload's
block ids. The `Upload` interface itself is in `base`.
"""

from __future__ import annotations

import base64
import secrets

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
