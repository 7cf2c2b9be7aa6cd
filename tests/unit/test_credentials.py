"""Credentials: secrets never show themselves; bad input fails with clear, secret-free errors."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from urllib.parse import quote

import pytest

from dsmount.errors import InvalidRequest
from dsmount.shared.credentials import (
    REDACTED,
    Credential,
    Secret,
    parse_connection_string,
    redact,
)

# Made-up values in the shapes Azure uses; none is a real secret.
KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3ODkwYWJjZGVmZ2hpams+/w=="
SIG = "AbCdEf0123456789%2Bslash%2Fplus%3D"
SAS = f"sv=2024-11-04&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig={SIG}"
CONN = (
    "DefaultEndpointsProtocol=https;AccountName=acct;"
    f"AccountKey={KEY};EndpointSuffix=core.windows.net"
)


def test_secret_never_renders_its_value(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret("hunter2-very-secret")
    template = "{}"  # str.format, as logging's "{" style and many libraries use
    rendered = [str(s), repr(s), f"{s}", f"{s!r}", f"{s:>30}", template.format(s)]
    assert all("hunter2" not in r for r in rendered)
    assert str(s) == REDACTED
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("secret is %s / %r", s, s)
    assert "hunter2" not in caplog.text
    assert s.reveal() == "hunter2-very-secret"


def test_secret_refuses_accidental_serialization() -> None:
    s = Secret("hunter2")
    with pytest.raises(TypeError):
        json.dumps({"secret": s})
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        pickle.dumps(Credential("sas_token", Secret(SAS)))
    # Copies are fine (immutable): they keep the value and stay redacted.
    assert copy.deepcopy(s).reveal() == "hunter2"


def test_secret_equality_and_truth() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert not Secret("")
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_credential_repr_and_describe_hide_secret() -> None:
    cred = Credential.from_dict({"kind": "account_key", "secret": KEY})
    assert KEY not in repr(cred)
    assert KEY not in str(cred.describe())
    assert cred.describe() == {"kind": "account_key", "client_id": None}
    ad = Credential.from_dict({"kind": "azure_ad", "client_id": "1234-abcd"})
    assert ad.describe() == {"kind": "azure_ad", "client_id": "1234-abcd"}


@pytest.mark.parametrize(
    "wire",
    [
        {"kind": "connection_string", "secret": CONN},
        {"kind": "account_key", "secret": KEY},
        {"kind": "sas_token", "secret": SAS},
        {"kind": "azure_ad"},
        {"kind": "azure_ad", "client_id": "00000000-0000-0000-0000-000000000001"},
        {"kind": "anonymous"},
    ],
)
def test_from_dict_round_trips_through_to_wire(wire: dict) -> None:
    cred = Credential.from_dict(wire)
    assert cred.kind == wire["kind"]
    assert cred.to_wire() == wire
    assert Credential.from_dict(json.loads(json.dumps(cred.to_wire()))) == cred


def test_sas_token_leading_question_mark_is_dropped() -> None:
    cred = Credential.from_dict({"kind": "sas_token", "secret": "?" + SAS})
    assert cred.secret is not None and cred.secret.reveal() == SAS


@pytest.mark.parametrize(
    ("wire", "fragment"),
    [
        ("not a dict", "must be an object"),
        ({}, "unknown credential kind"),
        ({"kind": "password", "secret": KEY}, "unknown credential kind"),
        ({"kind": "account_key"}, "needs a non-empty"),
        ({"kind": "account_key", "secret": "   "}, "needs a non-empty"),
        ({"kind": "account_key", "secret": 42}, "must be a string"),
        ({"kind": "account_key", "secret": "not base64 !!" + KEY}, "not valid base64"),
        ({"kind": "sas_token", "secret": "sv=2024-11-04&sp=r" + KEY}, "no 'sig='"),
        ({"kind": "connection_string", "secret": "AccountName=a;" + KEY[:20]}, "Key=Value"),
        ({"kind": "connection_string", "secret": "Foo=bar;AccountKey=" + KEY}, "names no account"),
        (
            {"kind": "connection_string", "secret": "AccountName=a;AccountKey=%%" + KEY},
            "not valid base64",
        ),
        ({"kind": "anonymous", "secret": KEY}, "takes no 'secret'"),
        ({"kind": "azure_ad", "client_id": ""}, "client_id"),
        ({"kind": "account_key", "secret": KEY, "extra": KEY}, "unknown credential field"),
    ],
)
def test_from_dict_rejects_bad_input_without_echoing_it(wire: object, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Credential.from_dict(wire)
    message = str(info.value)
    assert fragment in message
    assert KEY not in message and KEY[:16] not in message


def test_credential_constructor_validates_too() -> None:
    with pytest.raises(InvalidRequest):
        Credential("sas_token")
    with pytest.raises(InvalidRequest):
        Credential("anonymous", Secret("x"))
    with pytest.raises(InvalidRequest):
        Credential("account_key", Secret(KEY), client_id="abc")


def test_redact_replaces_raw_and_url_encoded_forms() -> None:
    text = (
        f"key={KEY} quoted={quote(KEY, safe='')} plus={quote(KEY)} "
        f"url=https://acct.blob.core.windows.net/c/b?{SAS}"
    )
    out = redact(text, [KEY])
    assert KEY not in out and quote(KEY, safe="") not in out and quote(KEY) not in out
    assert SIG not in out  # any sig= value is scrubbed even when not named
    assert out.count(REDACTED) >= 4
    assert "https://acct.blob.core.windows.net/c/b?" in out  # the rest stays readable


def test_redact_sas_signature_in_any_parameter_order_and_case() -> None:
    cred = Credential.from_dict({"kind": "sas_token", "secret": SAS})
    reordered = f"GET /c/b?SIG={SIG}&sv=2024-11-04 failed"
    out = redact(reordered, cred.secret_strings())
    assert SIG not in out
    assert "failed" in out


def test_secret_strings_cover_parts_of_a_connection_string() -> None:
    cs = f"AccountName=acct;SharedAccessSignature={SAS};BlobEndpoint=https://acct.example"
    cred = Credential.from_dict({"kind": "connection_string", "secret": cs})
    found = cred.secret_strings()
    assert SAS in found
    message = f"request to https://acct.example/c?{SAS.replace('&sig=', '&other=1&sig=')} failed"
    assert SIG not in redact(message, found)
    key_cred = Credential.from_dict({"kind": "connection_string", "secret": CONN})
    assert KEY in key_cred.secret_strings()
    assert KEY not in redact(f"oops {KEY}", key_cred.secret_strings())


def test_redact_ignores_empty_and_tiny_secrets() -> None:
    # A 1-3 character "secret" would shred every message; empty ones would loop.
    assert redact("abc def", ["", "a"]) == "abc def"


def test_parse_connection_string_is_case_insensitive_and_keeps_equals_in_values() -> None:
    parts = parse_connection_string(f" accountname=acct ; ACCOUNTKEY={KEY};;BlobEndpoint=http://x ")
    assert parts == {"accountname": "acct", "accountkey": KEY, "blobendpoint": "http://x"}


@pytest.mark.parametrize("bad", ["", " ; ", "novalue", "=value"])
def test_parse_connection_string_rejects_malformed(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_connection_string(bad)
