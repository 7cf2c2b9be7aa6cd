"""Tests of the control protocol as plain data (dsmount/control/protocol.py).

Malformed requests are refused with InvalidRequest and a stable code; requests and responses
survive an encode/parse round trip; `raise_for_error` turns an error code back into the typed
error the daemon raised.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsmount.control.protocol import (
    OPERATIONS,
    PROTOCOL_VERSION,
    AttachRequest,
    Request,
    Response,
    UnsupportedVersion,
    get_bool,
    get_number,
    get_str,
    get_version,
    parse_request,
    parse_response,
)
from dsmount.errors import ERROR_CODES, DsmountError, InvalidRequest, NotFound

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.none() | st.integers(-(2**31), 2**31) | st.text(max_size=10)


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (b"{not json", "invalid_request", "JSON"),
        (b"\xff\xfe", "invalid_request", "JSON"),
        (line([1, 2]), "invalid_request", "object"),
        (line("attach"), "invalid_request", "object"),
        (line({"v": 1, "args": {}}), "invalid_request", "op"),
        (line({"v": 1, "op": 7}), "invalid_request", "op"),
        (line({"v": 1, "op": "format_disk"}), "invalid_request", "format_disk"),
        (line({"v": 1, "op": "attach", "args": [1]}), "invalid_request", "args"),
        (line({"v": 1, "op": "attach", "args": "x"}), "invalid_request", "args"),
        (line({"v": 2, "op": "ping"}), "unsupported_version", "version"),
        (line({"op": "ping"}), "unsupported_version", "version"),
        (b"[" * 100_000, "invalid_request", "nested"),
    ],
)
def test_malformed_requests_are_refused(raw: bytes, code: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw)
    assert info.value.code == code
    assert words in str(info.value)


def test_wrong_version_is_its_own_kind() -> None:
    with pytest.raises(UnsupportedVersion):
        parse_request(line({"v": PROTOCOL_VERSION + 1, "op": "ping"}))


def test_missing_or_null_args_mean_empty() -> None:
    assert parse_request(line({"v": 1, "op": "list"})).args == {}
    assert parse_request(line({"v": 1, "op": "list", "args": None})).args == {}


@given(
    op=st.sampled_from(sorted(OPERATIONS)),
    args=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    id=ids,
)
def test_request_round_trip(op: str, args: dict, id: object) -> None:
    request = Request(op=op, args=args, id=id)
    encoded = request.encode()
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1  # one request per line
    assert parse_request(encoded) == request


@given(result=json_values, id=ids)
def test_success_round_trip(result: object, id: object) -> None:
    response = Response.success(result, id)
    encoded = response.encode()
    assert encoded.count(b"\n") == 1
    back = parse_response(encoded)
    assert back == response
    assert back.raise_for_error() == result


@given(code=st.sampled_from(sorted(ERROR_CODES)), message=st.text(max_size=30), id=ids)
def test_failure_round_trip_raises_the_typed_error(code: str, message: str, id: object) -> None:
    response = Response.failure(code, message, id)
    back = parse_response(response.encode())
    assert back == response
    with pytest.raises(DsmountError) as info:
        back.raise_for_error()
    assert type(info.value) is ERROR_CODES[code]
    assert info.value.code == code


def test_from_error_keeps_code_and_message() -> None:
    response = Response.from_error(NotFound("no datastore 'x'"), id=3)
    assert (response.ok, response.code, response.message, response.id) == (
        False,
        "not_found",
        "no datastore 'x'",
        3,
    )
    with pytest.raises(NotFound, match="no datastore 'x'"):
        parse_response(response.encode()).raise_for_error()


def test_unknown_code_raises_the_base_error() -> None:
    with pytest.raises(DsmountError) as info:
        Response.failure("internal", "internal error: RuntimeError").raise_for_error()
    assert type(info.value) is DsmountError
    assert "RuntimeError" in str(info.value)


def test_unsupported_version_answer_is_typed_on_the_client() -> None:
    answer = Response.from_error(UnsupportedVersion("protocol version 2 not supported"))
    with pytest.raises(UnsupportedVersion):
        parse_response(answer.encode()).raise_for_error()


def test_malformed_response_lines() -> None:
    with pytest.raises(InvalidRequest):
        parse_response(b"garbage")
    odd = parse_response(line({"v": 1, "ok": False, "error": "not an object"}))
    assert (odd.ok, odd.code) == (False, "error")
    with pytest.raises(DsmountError):
        odd.raise_for_error()


def test_argument_helpers() -> None:
    args = {"name": "data", "force": True, "n": 3}
    assert get_str(args, "name") == "data"
    assert get_str(args, "absent", required=False) is None
    assert get_bool(args, "force") is True and get_bool(args, "absent") is False
    assert get_bool(args, "absent", default=True) is True
    for call in (
        lambda: get_str(args, "absent"),
        lambda: get_str(args, "n"),
        lambda: get_bool(args, "name"),
    ):
        with pytest.raises(InvalidRequest):
            call()


def test_version_and_number_arguments() -> None:
    assert get_version({}) is None and get_version({"version": None}) is None
    assert get_version({"version": "v1"}) == "v1" and get_version({"version": 3}) == "3"
    assert get_number({}, "ttl", 60) == 60.0
    assert get_number({"ttl": 0}, "ttl", 60) == 0.0
    assert get_number({"ttl": 2.5}, "ttl", 60) == 2.5
    for bad in (True, [1], {"v": 1}, 1.5):
        with pytest.raises(InvalidRequest, match="version"):
            get_version({"version": bad})
    for bad in (-1, "10", True, None):
        with pytest.raises(InvalidRequest, match="ttl"):
            get_number({"ttl": bad}, "ttl", 60)


def test_attach_request_carries_owner_sharing_and_overrides() -> None:
    args = {"name": "ds", "kind": "local", "path": "/srv/d", "owner": 1000, "shared": False,
            "uid": 5, "gid": 6, "file_mode": "0640", "dir_mode": 0o750}
    request = AttachRequest.from_args(args)
    assert (request.owner, request.shared, request.effective_owner) == (1000, False, 1000)
    assert request.overrides == {"uid": 5, "gid": 6, "file_mode": 0o640, "dir_mode": 0o750}
    wire = request.to_dict(secrets=False)
    assert wire["file_mode"] == "0640" and wire["dir_mode"] == "0750"
    assert AttachRequest.from_args(wire) == request  # the state file round trip
    plain = AttachRequest.from_args({"name": "ds", "kind": "local", "path": "/srv/d"})
    assert (plain.effective_owner, plain.effective_shared, plain.overrides) == (0, True, {})
    assert not {"owner", "shared", "uid"} & set(plain.to_dict(secrets=False))
    user = AttachRequest.from_args({"name": "ds", "kind": "local", "path": "/d", "owner": 7})
    assert user.effective_shared is False  # a user's datastore is private unless shared


@pytest.mark.parametrize(("key", "value"), [
    ("owner", -1), ("owner", 2**32), ("owner", "0"), ("owner", True), ("uid", 1.5),
    ("file_mode", "rw-r--r--"), ("file_mode", "01000"), ("dir_mode", 0o1000), ("dir_mode", ""),
    ("shared", 1), ("gid", [0]),
])
def test_attach_request_refuses_bad_owners_and_modes(key: str, value: object) -> None:
    with pytest.raises(InvalidRequest, match=key):
        AttachRequest.from_args({"name": "ds", "kind": "local", "path": "/d", key: value})


def test_read_write_attach_requests() -> None:
    blob = {"name": "out", "kind": "blob", "container": "c", "account": "a"}
    request = AttachRequest.from_args({**blob, "read_write": True})
    assert request.read_write and request.to_dict(secrets=False)["read_write"] is True
    # What the state file keeps comes back read-write after a restart.
    assert AttachRequest.from_args(request.to_dict(secrets=True)).read_write
    assert "read_write" not in AttachRequest.from_args(blob).to_dict(secrets=False)
    with pytest.raises(InvalidRequest, match="immutable: attach the datastore itself"):
        AttachRequest.from_args({**blob, "read_write": True, "version": 2})
    with pytest.raises(InvalidRequest, match="cannot be immutable"):
        AttachRequest.from_args({**blob, "read_write": True, "immutable": True})
    with pytest.raises(InvalidRequest, match="local datastores are attached read-only"):
        AttachRequest.from_args({"name": "l", "kind": "local", "path": "/tmp", "read_write": True})
    with pytest.raises(InvalidRequest, match="'read_write' must be true or false"):
        AttachRequest.from_args({**blob, "read_write": "yes"})
