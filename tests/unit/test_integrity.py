"""Tests of the MD5 checks of ranged reads (dsmount/storage/integrity.py), on plain data.

The end-to-end cases (a body corrupted in transit, a wrong stored MD5, through a real mount)
are in tests/faults/test_integrity.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

from dsmount.errors import IntegrityError
from dsmount.storage.integrity import RANGE_MD5_MAX, range_md5_headers, verify_md5

BODY = bytes(range(256)) * 2048  # 512 KiB: hashed in a worker thread
OTHER = b"other bytes"


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def check(body: bytes, headers: dict[str, str], *, asked: bool, whole: bool) -> None:
    asyncio.run(
        verify_md5(
            body,
            headers,
            what="read x",
            asked_range_md5=asked,
            whole=whole,
            stored_header="x-ms-blob-content-md5",
        )
    )


def test_range_md5_is_asked_only_up_to_the_service_limit() -> None:
    assert range_md5_headers(1) == {"x-ms-range-get-content-md5": "true"}
    assert range_md5_headers(RANGE_MD5_MAX) == {"x-ms-range-get-content-md5": "true"}
    assert range_md5_headers(RANGE_MD5_MAX + 1) == {}
    assert range_md5_headers(0) == {}


@pytest.mark.parametrize("body", [BODY, b"tiny"])
def test_matching_range_md5_passes_and_a_mismatch_raises(body: bytes) -> None:
    check(body, {"Content-MD5": md5(body)}, asked=True, whole=False)
    with pytest.raises(IntegrityError, match="range's MD5"):
        check(body, {"Content-MD5": md5(OTHER)}, asked=True, whole=False)


def test_stored_md5_is_checked_only_for_a_whole_object_read() -> None:
    wrong = {"x-ms-blob-content-md5": md5(OTHER)}
    check(BODY, wrong, asked=False, whole=False)  # part of the object: nothing to compare
    with pytest.raises(IntegrityError, match="stored MD5"):
        check(BODY, wrong, asked=False, whole=True)
    check(BODY, {"x-ms-blob-content-md5": md5(BODY)}, asked=False, whole=True)


def test_range_md5_wins_over_the_stored_one() -> None:
    headers = {"Content-MD5": md5(BODY), "x-ms-blob-content-md5": md5(OTHER)}
    check(BODY, headers, asked=True, whole=True)


def test_unusable_or_absent_hashes_check_nothing() -> None:
    for value in ("", "not base64!", base64.b64encode(b"short").decode()):
        check(BODY, {"Content-MD5": value, "x-ms-blob-content-md5": value}, asked=True, whole=True)
    check(BODY, {}, asked=True, whole=True)
    # A Content-MD5 that was not asked for (e.g. the stored one on a full GET) is not taken
    # for the range's.
    check(BODY, {"Content-MD5": md5(OTHER)}, asked=False, whole=False)
