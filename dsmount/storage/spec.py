"""`DatastoreSpec`: the one typed description of where a datastore's bytes live.

Every producer of a datastore description (the CLI's attach flags, the registry, a
`[[datastore]]` config entry, the state file of a restarted daemon, the control protocol) ends
in `DatastoreSpec.from_dict`, and every consumer (the mount's backend, the transfers' store)
starts from the object it returns, so a spec is validated once, in one place, with errors that
name the field.

The wire form (`to_dict`) is the flat JSON object the control protocol and the state file have
always carried: `{"kind": "blob", "container": ..., "account": ..., "endpoint": ...,
"prefix": ..., "auth": {"kind": ..., "secret": ...}}`.

Invariants:
- `kind` is one of `KINDS`; a local spec has an absolute `path`; a blob spec a `container`; a
  file share spec a `share` that Azure accepts as a share name; `prefix` is normalised ("a/b",
  no "." or ".." segments).
- `check_writable()` is the one rule for which kinds may be attached or registered read-write
  (not local: the daemon runs as root and does not write on a user's behalf).
- `credential` is None exactly for local datastores; an Azure spec without one authenticates
  with Azure AD (managed identity), as the SDKs' default credential does.
- `to_dict(secrets=False)` and `redacted()` never contain a secret.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from dsmount.errors import InvalidRequest
from dsmount.shared.credentials import Credential
from dsmount.storage.names import clean_path, join

Kind = Literal["local", "blob", "fileshare"]
KINDS: tuple[str, ...] = get_args(Kind)
FIELDS = ("kind", "path", "container", "share", "account", "endpoint", "prefix", "auth")
_WHERE = {"local": "path", "blob": "container", "fileshare": "share"}
_FLAG = {"local": "--path", "blob": "--container", "fileshare": "--share"}
# Share names: 3-63 lower-case letters, digits and single dashes, starting and ending with a
# letter or digit (checked before any request, so a typo fails with a clear message).
_SHARE_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def share_name_problem(share: str | None) -> str | None:
    """Why `share` cannot name an Azure file share, or None if it can."""
    if _SHARE_RE.match(share or ""):
        return None
    return f"invalid file share name {share!r}: 3-63 lower-case letters, digits and dashes"


def _string(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        kind = type(value).__name__
        raise InvalidRequest(f"datastore field {key!r} must be a string, not {kind}")
    if "\0" in value:
        raise InvalidRequest(f"datastore field {key!r} contains a NUL character")
    return value


@dataclass(frozen=True)
class DatastoreSpec:
    """Where one datastore lives (see the module docstring)."""

    kind: Kind
    path: str | None = None  # local: an absolute directory
    container: str | None = None  # blob
    share: str | None = None  # fileshare
    account: str | None = None
    endpoint: str | None = None  # account URL; derived from the account when None
    prefix: str = ""  # the datastore's root inside the container or share
    credential: Credential | None = None  # None for local

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidRequest(
                f"unknown datastore kind {self.kind!r} (one of {', '.join(KINDS)})"
            )
        where = _WHERE[self.kind]
        if not getattr(self, where):
            raise InvalidRequest(f"a {self.kind} datastore needs a {where} ({_FLAG[self.kind]})")
        for other in set(_WHERE.values()) - {where}:
            if getattr(self, other):
                raise InvalidRequest(f"a {self.kind} datastore takes no {other!r}")
        object.__setattr__(self, "prefix", clean_path(self.prefix, what="prefix"))
        if self.kind == "fileshare" and (problem := share_name_problem(self.share)):
            raise InvalidRequest(problem)
        if self.kind == "local":
            if not os.path.isabs(self.path or ""):
                raise InvalidRequest(f"local path must be absolute: {self.path}")
            if self.credential is not None or self.account or self.endpoint:
                raise InvalidRequest("a local datastore takes no account, endpoint or auth")
        elif self.credential is None:
            object.__setattr__(self, "credential", Credential("azure_ad"))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, *, allow: frozenset[str] | set[str] = frozenset()) -> DatastoreSpec:
        """Parse the wire form. Keys other than `FIELDS` are refused unless listed in `allow`
        (the attach request's own fields). Raises InvalidRequest naming the field."""
        if not isinstance(d, dict):
            raise InvalidRequest("a datastore spec must be an object")
        unknown = set(d) - set(FIELDS) - set(allow)
        if unknown:
            shown = ", ".join(sorted(repr(k)[:40] for k in unknown))
            raise InvalidRequest(f"unknown datastore field(s): {shown}")
        kind = d.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
            raise InvalidRequest(f"unknown datastore kind {shown!r} (one of {', '.join(KINDS)})")
        auth = d.get("auth")
        credential = None
        if kind != "local":
            credential = Credential.from_dict(auth) if auth is not None else None
        elif auth is not None:
            raise InvalidRequest("a local datastore takes no 'auth'")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            path=_string(d, "path"),
            container=_string(d, "container"),
            share=_string(d, "share"),
            account=_string(d, "account"),
            endpoint=_string(d, "endpoint"),
            prefix=_string(d, "prefix") or "",
            credential=credential,
        )

    def check_writable(self) -> None:
        """Raise InvalidRequest unless this datastore may be attached read-write."""
        if self.kind == "local":
            raise InvalidRequest("local datastores are attached read-only")

    # -- forms ------------------------------------------------------------------------------------
    def to_dict(self, *, secrets: bool) -> dict[str, Any]:
        """The wire form; with `secrets`, the credential's secret is included (the control
        socket and the 0600 state file only)."""
        out: dict[str, Any] = {"kind": self.kind}
        for key in ("path", "container", "share", "account", "endpoint"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.prefix:
            out["prefix"] = self.prefix
        if self.credential is not None:
            out["auth"] = (
                self.credential.to_wire()
                if secrets
                else {k: v for k, v in self.credential.describe().items() if v is not None}
            )
        return out

    def redacted(self) -> dict[str, Any]:
        """What status output and logs may show: no secret."""
        return self.to_dict(secrets=False)

    @property
    def location(self) -> str:
        """Where it lives, for messages: a path, or account/container/prefix."""
        if self.kind == "local":
            return join(self.path or "", self.prefix) if self.prefix else self.path or ""
        return "/".join(
            x for x in (self.account or self.endpoint, self.container or self.share, self.prefix)
            if x
        )

    def below(self, subpath: str) -> DatastoreSpec:
        """The same datastore rooted at `subpath` inside it (a version's directory)."""
        sub = clean_path(subpath)
        if self.kind == "local":
            return replace(self, path=os.path.join(self.path or "", sub))
        return replace(self, prefix=join(self.prefix, sub))
