"""Credentials for cloud datastores, and the redaction that keeps their secrets out of output.

A `Credential` says how to authenticate (connection string, account key, SAS token, Azure AD
identity, or anonymous). Its secret lives in a `Secret`, which renders as "<redacted>" in
str/repr/format/logging and refuses to be pickled or JSON-encoded by accident; the only way to
the value is `Secret.reveal()`, called where a client is built or a request is sent.

Invariants:
- No method of this module returns or raises a message containing a secret, except `reveal`
  and `Credential.to_wire` (which the control client needs to send it to the daemon).
- `redact` is the one scrubber for text that may hold a secret (SDK exception messages carry
  request URLs, and a SAS token sits in the query string of those URLs).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, quote, quote_plus

from dsmount.errors import InvalidRequest

REDACTED = "<redacted>"

CredentialKind = Literal["connection_string", "account_key", "sas_token", "azure_ad", "anonymous"]
KINDS: tuple[str, ...] = get_args(CredentialKind)
_NEEDS_SECRET = frozenset({"connection_string", "account_key", "sas_token"})

# A SAS signature in any URL or query string, whatever credential it came from: scrubbed even
# when we were not told about that secret (e.g. a SAS embedded in a user-given endpoint).
_SIG_RE = re.compile(r"(?i)(\bsig=)[^&\s'\"<>]+")


class Secret:
    """A secret string that does not show itself: str/repr/format give "<redacted>"."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """The secret value. Call only where it is handed to a client or sent on the wire."""
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __format__(self, spec: str) -> str:
        return format(REDACTED, spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so a comparison does not leak a prefix by timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    # Immutable, so copies may share the object; pickling (multiprocessing, caches written
    # to disk) must be a deliberate `reveal()`, never an accident.
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled; call reveal() deliberately")


@dataclass(frozen=True)
class Credential:
    """How to authenticate to one datastore."""

    kind: CredentialKind
    secret: Secret | None = None
    client_id: str | None = None  # user-assigned managed identity (azure_ad); not secret

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidRequest(f"unknown credential kind {self.kind!r}; expected one of {KINDS}")
        if self.kind in _NEEDS_SECRET and not self.secret:
            raise InvalidRequest(f"credential kind {self.kind!r} needs a non-empty secret")
        if self.kind not in _NEEDS_SECRET and self.secret is not None:
            raise InvalidRequest(f"credential kind {self.kind!r} takes no secret")
        if self.client_id is not None and self.kind != "azure_ad":
            raise InvalidRequest("client_id is only meaningful for kind 'azure_ad'")

    def describe(self) -> dict[str, Any]:
        """What status output may show: the kind and managed-identity client id, never a secret."""
        return {"kind": self.kind, "client_id": self.client_id}

    def to_wire(self) -> dict[str, Any]:
        """The dict `from_dict` accepts, WITH the secret revealed: only for the control socket."""
        d: dict[str, Any] = {"kind": self.kind}
        if self.secret is not None:
            d["secret"] = self.secret.reveal()
        if self.client_id is not None:
            d["client_id"] = self.client_id
        return d

    def secret_strings(self) -> list[str]:
        """Every substring of the secret worth scrubbing from text (see `redact`)."""
        if self.secret is None:
            return []
        value = self.secret.reveal()
        found = [value]
        if self.kind == "connection_string":
            with contextlib.suppress(InvalidRequest):
                parts = parse_connection_string(value)
                for key in ("accountkey", "sharedaccesssignature"):
                    if parts.get(key):
                        found.append(parts[key])
                        found.extend(_sas_signatures(parts[key]))
        elif self.kind == "sas_token":
            found.extend(_sas_signatures(value))
        return found

    @classmethod
    def from_dict(cls, d: Any) -> Credential:
        """Build from `{"kind": ..., "secret": ..., "client_id": ...}` as the control protocol
        carries it. Raises InvalidRequest (never echoing the secret) on bad input."""
        if not isinstance(d, dict):
            raise InvalidRequest("credential must be an object with a 'kind'")
        unknown = set(d) - {"kind", "secret", "client_id"}
        if unknown:
            raise InvalidRequest(f"unknown credential field(s): {', '.join(sorted(unknown))}")
        kind = d.get("kind")
        if kind not in KINDS:
            shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
            raise InvalidRequest(f"unknown credential kind {shown!r}; expected one of {KINDS}")
        raw = d.get("secret")
        if raw is not None and not isinstance(raw, str):
            raise InvalidRequest(f"credential secret must be a string, not {type(raw).__name__}")
        client_id = d.get("client_id")
        if client_id is not None and (not isinstance(client_id, str) or not client_id):
            raise InvalidRequest("credential client_id must be a non-empty string")
        raw = raw.strip() if raw is not None else None
        if kind in _NEEDS_SECRET and not raw:
            raise InvalidRequest(f"credential kind {kind!r} needs a non-empty 'secret'")
        if kind not in _NEEDS_SECRET and raw:
            raise InvalidRequest(f"credential kind {kind!r} takes no 'secret'")
        if kind == "account_key":
            _check_account_key(raw or "")
        elif kind == "sas_token":
            raw = (raw or "").lstrip("?")
            if "sig=" not in raw:
                raise InvalidRequest("SAS token has no 'sig=' parameter (expected 'sv=..&sig=..')")
        elif kind == "connection_string":
            parts = parse_connection_string(raw or "")
            if not ({"accountname", "blobendpoint", "fileendpoint"} & parts.keys()):
                raise InvalidRequest(
                    "connection string names no account (AccountName=...) or endpoint"
                )
            if "accountkey" in parts:
                _check_account_key(parts["accountkey"])
        secret = Secret(raw) if kind in _NEEDS_SECRET and raw else None
        return cls(kind=kind, secret=secret, client_id=client_id)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (raw or URL-encoded) and every SAS
    `sig=` value replaced by "<redacted>"."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.update({secret, quote(secret, safe=""), quote_plus(secret), quote(secret)})
    # Longest first, so a secret containing another is replaced whole.
    for form in sorted((f for f in forms if len(f) >= 4), key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return _SIG_RE.sub(lambda m: m.group(1) + REDACTED, text)


def parse_connection_string(cs: str) -> dict[str, str]:
    """Parse `Key=Value;Key=Value` into a dict with lower-cased keys (Azure treats them
    case-insensitively). Values may contain "=" (base64 keys end with it)."""
    result: dict[str, str] = {}
    for n, segment in enumerate(cs.strip().split(";"), 1):
        segment = segment.strip()
        if not segment:
            continue
        key, eq, value = segment.partition("=")
        key = key.strip()
        if not eq or not key:
            # Never echo the segment: it may be the key itself.
            raise InvalidRequest(f"connection string segment {n} is not of the form Key=Value")
        result[key.lower()] = value.strip()
    if not result:
        raise InvalidRequest("connection string is empty")
    return result


def azure_ad_credential(credential: Credential) -> Any:
    """The asyncio Azure AD credential for an `azure_ad` Credential: DefaultAzureCredential,
    which on compute nodes resolves to the managed identity (`client_id` picks a user-assigned
    one). The caller owns it and must `await .close()` it."""
    if credential.kind != "azure_ad":
        raise InvalidRequest(f"not an Azure AD credential: {credential.kind!r}")
    from azure.identity.aio import DefaultAzureCredential

    if credential.client_id:
        return DefaultAzureCredential(managed_identity_client_id=credential.client_id)
    return DefaultAzureCredential()


def _check_account_key(key: str) -> None:
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("account key is not valid base64") from None
    if not decoded:
        raise InvalidRequest("account key is empty")


def _sas_signatures(sas: str) -> list[str]:
    """The `sig` values of a SAS query string, decoded and as written."""
    found = [m.group(0)[4:] for m in _SIG_RE.finditer(sas)]
    for values in parse_qs(sas.lstrip("?")).get("sig", []):
        found.append(values)
    return found
