"""Build a backend from an attach spec (the plain dict the control protocol carries).

Specs: {"kind": "local", "path": ...}, {"kind": "blob", "container": ..., "account": ...,
"endpoint": ..., "prefix": ..., "auth": {...}}, {"kind": "fileshare", "share": ..., ...}.
`redacted_spec` is the form that may be shown or persisted: auth secrets removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsmount.backends.base import Backend, RetryPolicy
from dsmount.errors import InvalidRequest, NotFound

KINDS = ("local", "blob", "fileshare")
_SECRET_KEYS = {"secret", "key", "sas_token", "connection_string", "account_key"}


def redacted_spec(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k not in _SECRET_KEYS and k != "auth"}
    auth = spec.get("auth")
    if isinstance(auth, dict):
        out["auth"] = {k: v for k, v in auth.items() if k not in _SECRET_KEYS}
    return out


def _str(spec: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = spec.get(key)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"{spec.get('kind')} datastore needs {key!r}")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{key!r} must be a string")
    return value


def is_dir(path: Path) -> bool:
    """Path.is_dir, but any OSError (ENAMETOOLONG, EACCES...) means "no", never an exception."""
    try:
        return path.is_dir()
    except OSError:
        return False


def make_backend(spec: dict[str, Any], *, retry: RetryPolicy) -> Backend:
    kind = spec.get("kind")
    if kind not in KINDS:
        raise InvalidRequest(f"unknown datastore kind {kind!r} (one of {', '.join(KINDS)})")
    if kind == "local":
        from dsmount.backends.local import LocalBackend

        path = Path(_str(spec, "path", required=True) or "")
        if not path.is_absolute():
            raise InvalidRequest(f"local path must be absolute: {path}")
        if not is_dir(path):
            raise NotFound(f"local path {path} does not exist or is not a directory")
        return LocalBackend(path)
    from dsmount.credentials import Credential

    auth = spec.get("auth") or {"kind": "azure_ad"}
    if not isinstance(auth, dict):
        raise InvalidRequest("'auth' must be an object")
    credential = Credential.from_dict(auth)
    if kind == "blob":
        from dsmount.backends.blob import BlobBackend

        return BlobBackend(
            container=_str(spec, "container", required=True) or "",
            credential=credential,
            account=_str(spec, "account"),
            endpoint=_str(spec, "endpoint"),
            prefix=(_str(spec, "prefix") or "").strip("/"),
            retry=retry,
        )
    from dsmount.backends.fileshare import FileShareBackend

    return FileShareBackend(
        share=_str(spec, "share", required=True) or "",
        credential=credential,
        account=_str(spec, "account"),
        endpoint=_str(spec, "endpoint"),
        prefix=(_str(spec, "prefix") or "").strip("/"),
        retry=retry,
    )
