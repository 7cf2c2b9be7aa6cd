"""End-to-end checks of ranged reads against the MD5 hashes Azure Storage sends with them.

Both Blob and Files compute a transactional MD5 of the bytes they send for a ranged GET that
asks for it (`x-ms-range-get-content-md5: true`), but only for ranges of at most 4 MiB (larger
ones are refused with 400). When a read covers the whole object, the object's stored MD5 (if
its uploader set one) comes back too (`x-ms-blob-content-md5` / `x-ms-content-md5` on a
ranged GET). `verify_md5` checks whichever of the two applies; a mismatch is an
IntegrityError (EIO for the reader) and an error log line, and the bytes are never served.

Invariants:
- Only these helpers know the header names and the 4 MiB limit; backends call
  `range_md5_headers` when building a GET and `verify_md5` on its body.
- Hashing a large body runs in a worker thread (hashlib releases the GIL), so the asyncio
  loop that drives every request keeps serving others meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import Mapping

from dsmount.errors import IntegrityError

log = logging.getLogger(__name__)

RANGE_MD5_MAX = 4 * 1024 * 1024  # the service's limit for x-ms-range-get-content-md5
_INLINE_MAX = 256 * 1024  # smaller bodies are hashed on the loop: a thread hop costs more


def range_md5_headers(length: int) -> dict[str, str]:
    """Headers asking for the transactional MD5 of a `length`-byte range, when allowed."""
    return {"x-ms-range-get-content-md5": "true"} if 0 < length <= RANGE_MD5_MAX else {}


def _decode(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == 16 else None


async def verify_md5(
    body: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    asked_range_md5: bool,
    whole: bool,
    stored_header: str,
) -> None:
    """Check `body` against the range MD5 (if it was asked for) or, for a read of the whole
    object, against its stored MD5 (`stored_header`). Nothing to compare with: no check.

    Raises IntegrityError on a mismatch (logged as an error: it means corruption somewhere
    between the storage and us, or an object whose stored MD5 is wrong)."""
    expected = _decode(headers.get("Content-MD5")) if asked_range_md5 else None
    source = "the range's MD5"
    if expected is None and whole:
        expected = _decode(headers.get(stored_header))
        source = "the object's stored MD5"
    if expected is None:
        return
    if len(body) > _INLINE_MAX:
        actual = await asyncio.to_thread(lambda: hashlib.md5(body).digest())
    else:
        actual = hashlib.md5(body).digest()
    if actual != expected:
        message = f"{what}: {len(body)} bytes received do not match {source}"
        log.error("integrity check failed: %s; not served", message)
        raise IntegrityError(message)
