"""What the registry holds about one datastore: its public fields (`DatastoreInfo`) and where its
credential lives (`CredentialRef`), never the secret itself; plus the naming rules."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsmount.errors import ConfigError, InvalidRequest
from dsmount.shared.credentials import KINDS as CREDENTIAL_KINDS
from dsmount.shared.credentials import Credential
from dsmount.storage.names import clean_path
from dsmount.storage.spec import DatastoreSpec

SOURCES = ("stored", "env", "file", "none")
# Letters, digits, ".", "_", "-": a valid directory name under /datastores and easy to turn
# into an environment variable name (dsmount run).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"invalid datastore name {name!r}: 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_version(version: str | int) -> int:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest(f"invalid version {version!r}: versions are 1, 2, 3, ...")
    return int(text)


@dataclass(frozen=True)
class CredentialRef:
    """How a registered datastore authenticates; holds no secret, only where it lives."""

    kind: str  # one of dsmount.shared.credentials.KINDS
    source: str = "none"  # stored (secrets.toml) | env | file | none (azure_ad, anonymous)
    ref: str | None = None  # the env var name or the file path
    client_id: str | None = None  # user-assigned managed identity (azure_ad)

    def __post_init__(self) -> None:
        if self.kind not in CREDENTIAL_KINDS:
            raise InvalidRequest(f"unknown credential kind {self.kind!r}")
        if self.source not in SOURCES:
            raise InvalidRequest(f"unknown credential source {self.source!r}")
        needs_secret = self.kind in ("connection_string", "account_key", "sas_token")
        if needs_secret == (self.source == "none"):
            raise InvalidRequest(f"credential kind {self.kind!r} with source {self.source!r}")
        if (self.source in ("env", "file")) != bool(self.ref):
            raise InvalidRequest(f"a credential from {self.source!r} needs exactly one ref")

    def describe(self) -> str:
        where = {
            "stored": " (stored in the registry)",
            "env": f" (from environment variable {self.ref})",
            "file": f" (from file {self.ref})",
            "none": "",
        }[self.source]
        extra = f" (client id {self.client_id})" if self.client_id else ""
        return f"{self.kind}{where}{extra}"

    def to_toml(self) -> dict[str, Any]:
        d = {"kind": self.kind, "source": self.source, "ref": self.ref, "client_id": self.client_id}
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class DatastoreInfo:
    """One registered datastore (public fields only)."""

    name: str
    kind: str
    account: str | None = None
    container: str | None = None  # blob
    share: str | None = None  # fileshare
    path: str | None = None  # local (absolute)
    endpoint: str | None = None
    prefix: str = ""
    auth: CredentialRef | None = None  # None for local datastores
    registered: str = field(default="", compare=False)
    # `dsmount attach NAME` attaches it read-write unless told --read-only (blob, file share).
    read_write: bool = False

    @classmethod
    def azure(
        cls,
        name: str,
        kind: str,
        where: str,
        *,
        account: str | None,
        endpoint: str | None,
        prefix: str,
        auth: CredentialRef,
        read_write: bool = False,
    ) -> DatastoreInfo:
        """A blob (`where`: the container) or file share (`where`: the share) datastore, as
        the API and the CLI register it (`prefix` normalized)."""
        return cls(
            name,
            kind,
            account=account,
            endpoint=endpoint,
            prefix=clean_path(prefix, what="prefix"),
            auth=auth,
            read_write=read_write,
            **{"container" if kind == "blob" else "share": where},
        )

    @classmethod
    def local(cls, name: str, path: str | Path) -> DatastoreInfo:
        """A local-directory datastore (`path` made absolute)."""
        return cls(name, "local", path=os.path.abspath(path))

    def validate(self) -> DatastoreInfo:
        check_name(self.name)
        # Kind and location are checked by the storage layer's one rule set (DatastoreSpec);
        # a placeholder credential stands in for the one the registry resolves later.
        spec = self.storage_spec(None if self.kind == "local" else Credential("azure_ad"))
        if self.read_write:
            spec.check_writable()
        if self.kind == "local":
            return self
        if self.auth is None:
            raise InvalidRequest(f"a {self.kind} datastore needs a credential")
        if not (self.account or self.endpoint or self.auth.kind == "connection_string"):
            raise InvalidRequest(f"a {self.kind} datastore needs --account or --endpoint")
        return self

    @property
    def datastore_type(self) -> str:
        """The kind in Azure ML's words (AzureBlob, AzureFile) or "Local"."""
        return {"blob": "AzureBlob", "fileshare": "AzureFile", "local": "Local"}[self.kind]

    def location(self) -> str:
        if self.kind == "local":
            return self.path or ""
        return "/".join(
            x
            for x in (self.account or self.endpoint, self.container or self.share, self.prefix)
            if x
        )

    def storage_spec(self, credential: Credential | None) -> DatastoreSpec:
        """Where this datastore lives, as the storage layer takes it (`credential` resolved by
        `Registry.credential`)."""
        return DatastoreSpec(
            kind=self.kind,  # type: ignore[arg-type] - validated by `validate`
            path=self.path,
            container=self.container,
            share=self.share,
            account=self.account,
            endpoint=self.endpoint,
            prefix=self.prefix,
            credential=credential,
        )

    def to_toml(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "account": self.account,
            "container": self.container,
            "share": self.share,
            "path": self.path,
            "endpoint": self.endpoint,
            "prefix": self.prefix or None,
            "registered": self.registered,
        }
        d = {k: v for k, v in d.items() if v not in (None, "")}
        if self.read_write:
            d["read_write"] = True
        if self.auth is not None:
            d["auth"] = self.auth.to_toml()
        return d

    def public_dict(self) -> dict[str, Any]:
        """Everything `show` may print: never a secret."""
        d = {
            "name": self.name,
            "kind": self.kind,
            "datastore_type": self.datastore_type,
            **{k: v for k, v in self.to_toml().items() if k != "auth"},
        }
        if self.auth is not None:
            d["auth"] = self.auth.to_toml()
            d["auth_description"] = self.auth.describe()
        return d

    @classmethod
    def from_toml(cls, name: str, d: Any) -> DatastoreInfo:
        if not isinstance(d, dict):
            raise ConfigError(f"registry entry {name!r} is not a table")
        known = {
            "kind",
            "account",
            "container",
            "share",
            "path",
            "endpoint",
            "prefix",
            "registered",
            "auth",
            "read_write",
        }
        strings = {k: d[k] for k in known - {"auth", "read_write"} if k in d}
        if any(not isinstance(v, str) for v in strings.values()):
            raise ConfigError(f"registry entry {name!r}: values must be strings")
        auth = d.get("auth")
        try:
            ref = None
            if auth is not None:
                if not isinstance(auth, dict):
                    raise InvalidRequest("auth is not a table")
                ref = CredentialRef(
                    **{k: auth[k] for k in ("kind", "source", "ref", "client_id") if k in auth}
                )
            read_write = d.get("read_write", False)
            if not isinstance(read_write, bool):
                raise InvalidRequest("read_write must be true or false")
            return cls(name=name, auth=ref, read_write=read_write, **strings).validate()
        except (InvalidRequest, TypeError) as e:
            raise ConfigError(f"registry entry {name!r} is invalid: {e}") from None
