"""Request authentication for the Azure Files emulator: SharedKey, SAS (account and service) and
bearer tokens, verified the way the service verifies them.

The server never trusts what the client claims: it rebuilds the string-to-sign from the request
as received (method, standard headers, canonicalized `x-ms-*` headers, canonicalized resource
from the raw path and query) and compares HMAC-SHA256 signatures in constant time.

Rules implemented (Azure Storage "Authorize with Shared Key", "Create an account SAS",
"Create a service SAS", Azure Files "OAuth over REST"):
- SharedKey: Content-Length is signed as empty when it is 0; the request must carry `x-ms-date`
  or `Date` within 15 minutes of now.
- Canonicalized headers are ordered the way the service orders them: a culture-aware comparison
  that ignores hyphens at first (`header_sort_key`), not plain code-point order.
- Account SAS must include the file service (`ss` has `f`), the operation's resource type
  (`srt`: s service, c share/listing, o directory/file) and one of its permissions (`sp`).
- Service SAS: `sr=s` covers directories and files of one share (not share-level operations),
  `sr=f` one file; the canonicalized resource comes from the request URL, so a SAS for another
  share or file simply fails the signature check, as on the service.
- Bearer: only the configured token is valid; the request must say
  `x-ms-file-request-intent: backup` (400 MissingRequiredHeader otherwise).
- No credentials at all: 401 NoAuthenticationInformation with a Bearer challenge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from .errors import StorageError, auth_failed, bad_header, missing_header
from .messages import Request

# The service accepts requests whose date is within this much of its own clock.
MAX_CLOCK_SKEW = timedelta(minutes=15)
TENANT_ID = "00000000-0000-0000-0000-000000000000"
BEARER_CHALLENGE = (
    f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT_ID}/oauth2/authorize "
    "resource_id=https://storage.azure.com"
)
_SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


@dataclass(frozen=True)
class Access:
    """What one operation touches and needs, for authorization checks."""

    level: str  # account SAS resource type: "s" service, "c" share/listing, "o" dir/file
    permissions: str  # SAS permission letters, any one of which allows the operation
    share: str | None
    path: tuple[str, ...]  # decoded segments inside the share
    share_level: bool = False  # a share/service operation (not allowed with a service SAS)


@dataclass(frozen=True)
class Credentials:
    account: str
    key: str  # base64 account key
    bearer_token: str | None = None


def sign(key_b64: str, string_to_sign: str) -> str:
    digest = hmac.new(base64.b64decode(key_b64), string_to_sign.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def authenticate(req: Request, access: Access, creds: Credentials, now: datetime) -> str:
    """Check the request's credentials; return the scheme used or raise StorageError."""
    authorization = req.header("Authorization")
    if authorization:
        scheme, _, rest = authorization.partition(" ")
        if scheme == "SharedKey":
            _verify_shared_key(req, rest.strip(), creds, now)
            return "SharedKey"
        if scheme == "Bearer":
            _verify_bearer(req, rest.strip(), creds)
            return "Bearer"
        raise StorageError(
            400,
            "InvalidAuthenticationInfo",
            "Authentication information is not given in the correct format. Check the value of "
            "Authorization header.",
        )
    if req.q("sig") is not None:
        _verify_sas(req, access, creds, now)
        return "SAS"
    raise StorageError(
        401, "NoAuthenticationInformation", headers=[("WWW-Authenticate", BEARER_CHALLENGE)]
    )


# -- SharedKey ---------------------------------------------------------------------------------


def header_sort_key(name: str) -> tuple[str, list[int]]:
    """The service's order of lower-case `x-ms-*` names: by the name with hyphens ignored, then
    (names equal but for hyphens) the name whose first differing hyphen comes later first."""
    return (name.replace("-", ""), [-i for i, c in enumerate(name) if c == "-"])


def canonicalized_headers(req: Request) -> str:
    names = sorted(
        ((n, v) for n, v in req.headers.lower_items() if n.startswith("x-ms-")),
        key=lambda item: header_sort_key(item[0]),
    )
    return "".join(f"{name}:{value.strip()}\n" for name, value in names)


def canonicalized_resource(req: Request, account: str) -> str:
    grouped: dict[str, list[str]] = {}
    for name, value in req.query:
        grouped.setdefault(name.lower(), []).append(value)
    out = f"/{account}{req.raw_path}"
    for name in sorted(grouped):
        out += f"\n{name}:{','.join(sorted(grouped[name]))}"
    return out


def shared_key_string_to_sign(req: Request, account: str) -> str:
    values = []
    for name in _SIGNED_HEADERS:
        value = req.header(name) or ""
        if name == "content-length" and value == "0":
            value = ""
        values.append(value)
    return (
        req.method
        + "\n"
        + "\n".join(values)
        + "\n"
        + canonicalized_headers(req)
        + canonicalized_resource(req, account)
    )


def _verify_shared_key(req: Request, credential: str, creds: Credentials, now: datetime) -> None:
    account, _, signature = credential.partition(":")
    if account != creds.account or not signature:
        raise auth_failed(
            f"The MAC signature found in the HTTP request '{signature}' is not valid."
        )
    raw_date = req.header("x-ms-date") or req.header("Date")
    if not raw_date:
        raise auth_failed("Request date header not specified.")
    try:
        sent = parsedate_to_datetime(raw_date)
    except (TypeError, ValueError):
        raise auth_failed(f"Request date header '{raw_date}' is not valid.") from None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    if abs(now - sent) > MAX_CLOCK_SKEW:
        raise auth_failed(
            f"Request date header too old: '{raw_date}'"
            if sent < now
            else f"Request date header is in the future: '{raw_date}'"
        )
    string_to_sign = shared_key_string_to_sign(req, creds.account)
    expected = sign(creds.key, string_to_sign)
    if not hmac.compare_digest(expected, signature):
        raise auth_failed(
            f"The MAC signature found in the HTTP request '{signature}' is not the same as any "
            f"computed signature. Server used following string to sign: '{string_to_sign}'."
        )


# -- bearer tokens -----------------------------------------------------------------------------


def _verify_bearer(req: Request, token: str, creds: Credentials) -> None:
    if creds.bearer_token is None or not hmac.compare_digest(
        token.encode("utf-8"), creds.bearer_token.encode("utf-8")
    ):
        raise StorageError(
            401,
            "InvalidAuthenticationInfo",
            headers=[("WWW-Authenticate", BEARER_CHALLENGE)],
            details=[("AuthenticationErrorDetail", "Signature validation failed.")],
        )
    intent = req.header("x-ms-file-request-intent")
    if intent is None:
        raise missing_header("x-ms-file-request-intent")
    if intent.lower() != "backup":
        raise bad_header("x-ms-file-request-intent", intent)


# -- SAS ---------------------------------------------------------------------------------------


def _parse_sas_time(value: str) -> datetime:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _sas_string_to_sign(req: Request, access: Access, account: str) -> str:
    def v(name: str) -> str:
        return req.q(name) or ""

    version = v("sv")
    if req.q("sr") is None:  # account SAS
        fields = [account, v("sp"), v("ss"), v("srt"), v("st"), v("se"), v("sip"), v("spr")]
        fields.append(version)
        if version >= "2020-12-06":
            fields.append(v("ses"))  # signed encryption scope, empty for files
        return "\n".join(fields) + "\n"
    # Service SAS: the resource comes from the request URL, not from the token.
    if v("sr") == "s":
        resource = f"/file/{account}/{access.share or ''}"
    else:
        resource = f"/file/{account}/{access.share or ''}/" + "/".join(access.path)
    fields = [v("sp"), v("st"), v("se"), resource, v("si"), v("sip"), v("spr"), version]
    fields += [v("rscc"), v("rscd"), v("rsce"), v("rscl"), v("rsct")]
    return "\n".join(fields)


def _verify_sas(req: Request, access: Access, creds: Credentials, now: datetime) -> None:
    sr = req.q("sr")
    if not req.q("sv") or not req.q("se") and not req.q("si"):
        raise auth_failed("sv and se are mandatory. Specify both.")
    if req.q("si"):
        raise auth_failed(f"Signed identifier '{req.q('si')}' does not exist.")
    if req.q("skoid"):
        raise auth_failed("User delegation SAS is not supported by the emulator.")
    string_to_sign = _sas_string_to_sign(req, access, creds.account)
    expected = sign(creds.key, string_to_sign)
    if not hmac.compare_digest(expected, req.q("sig") or ""):
        raise auth_failed(
            "Signature did not match. String to sign used was "
            + string_to_sign.replace("\n", "\\n")
        )
    try:
        expiry = _parse_sas_time(req.q("se") or "")
        start = _parse_sas_time(req.q("st") or "") if req.q("st") else None
    except ValueError:
        raise auth_failed("Signed expiry or start time is not a valid ISO 8601 time.") from None
    if now > expiry or (start is not None and now < start):
        raise auth_failed(
            f"Signature not valid in the specified time frame: Start [{req.q('st') or ''}] - "
            f"Expiry [{req.q('se')}] - Current [{now.strftime('%a, %d %b %Y %H:%M:%S GMT')}]"
        )
    if (req.q("spr") or "https,http") == "https" and req.scheme != "https":
        raise StorageError(403, "AuthorizationProtocolMismatch")
    sip = req.q("sip")
    if sip and not _ip_allowed(sip, req.client_ip):
        raise StorageError(403, "AuthorizationSourceIPMismatch")
    permissions = req.q("sp") or ""
    if sr is None:
        if "f" not in (req.q("ss") or ""):
            raise StorageError(403, "AuthorizationServiceMismatch")
        if access.level not in (req.q("srt") or ""):
            raise StorageError(403, "AuthorizationResourceTypeMismatch")
    elif sr not in ("s", "f") or access.share_level or (sr == "f" and access.level != "o"):
        raise StorageError(403, "AuthorizationFailure")
    if not any(p in permissions for p in access.permissions):
        raise StorageError(403, "AuthorizationPermissionMismatch")


def _ip_allowed(sip: str, client_ip: str) -> bool:
    low, _, high = unquote(sip).partition("-")
    try:
        ip = ipaddress.ip_address(client_ip)
        return ipaddress.ip_address(low) <= ip <= ipaddress.ip_address(high or low)
    except ValueError:
        return False
