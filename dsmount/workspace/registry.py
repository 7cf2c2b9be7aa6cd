"""The workspace: named datastores registered once, then used by name.

Where: the directory in env `DSMOUNT_REGISTRY`, else `/etc/dsmount/registry` for root, else
`$XDG_CONFIG_HOME/dsmount/registry` (`~/.config/dsmount/registry`). It holds
- `datastores.toml`: `default = "NAME"` and one `[datastores.NAME]` table per datastore (kind,
  account, container / share / path, endpoint, prefix, and `[datastores.NAME.auth]` saying how
  to authenticate: `kind`, `source` = "stored" | "env" | "file" | "none", `ref`, `client_id`).
  It never holds a secret.
- `secrets.toml` (0600): `[secrets] NAME = "..."` for credentials with source "stored". It is
  refused, like any file holding a secret, when group or others can read it.
A credential with source "env"/"file" is a reference: the variable or the (0600) file is read
each time the datastore is used, so the secret never lands in the registry.

Invariants:
- Both files are replaced atomically (temp file, fsync, rename); writers hold an exclusive
  lock (`.lock`), so concurrent `dsmount datastore ...` commands never lose an update.
- When the registry is not empty exactly one datastore is the default: the first one
  registered becomes it; removing the default makes the earliest-registered remaining
  datastore the default (or none, when it was the last one).
- Versions (Grid-style) live in the datastore itself, not here: version N of a datastore is
  the prefix `<prefix>/_versions/N/` (for a local datastore, `<path>/_versions/N/`). It is
  claimed by creating `_versions/N.claim` exclusively, filled, and committed by writing
  `_versions/N.json` (a small manifest); only committed versions are listed or attached, and a
  failed attempt's number is never reused. Versions are immutable: attached without TTL
  revalidation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from dsmount.errors import (
    AlreadyExists,
    BackendError,
    ConfigError,
    DsmountError,
    InvalidRequest,
    NotFound,
)
from dsmount.shared.credentials import KINDS as CREDENTIAL_KINDS
from dsmount.shared.credentials import Credential
from dsmount.shared.fileutil import atomic_write
from dsmount.shared.secretref import check_private, read_secret_env, read_secret_file
from dsmount.storage.factory import make_store
from dsmount.storage.names import clean_path
from dsmount.storage.retry import RetryPolicy
from dsmount.storage.spec import DatastoreSpec
from dsmount.storage.store import Store

CHECK_RETRY = RetryPolicy(max_attempts=1, deadline=30.0)

if TYPE_CHECKING:  # transfer is imported when needed: it pulls in the progress bars
    from dsmount.workspace.transfer import LocalFile, TransferSummary

REGISTRY_ENV = "DSMOUNT_REGISTRY"
DATASTORES_FILE = "datastores.toml"
SECRETS_FILE = "secrets.toml"
LOCK_FILE = ".lock"
VERSIONS_DIR = "_versions"
KINDS = ("blob", "fileshare", "local")
SOURCES = ("stored", "env", "file", "none")
# Letters, digits, ".", "_", "-": a valid directory name under /datastores and easy to turn
# into an environment variable name (dsmount run).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VERSION_FILE = re.compile(r"([1-9][0-9]{0,8})\.(json|claim)")


def default_registry_dir() -> Path:
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/dsmount/registry")
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "dsmount" / "registry"


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
            **{"container" if kind == "blob" else "share": where},
        )

    @classmethod
    def local(cls, name: str, path: str | Path) -> DatastoreInfo:
        """A local-directory datastore (`path` made absolute)."""
        return cls(name, "local", path=os.path.abspath(path))

    def validate(self) -> DatastoreInfo:
        check_name(self.name)
        if self.kind not in KINDS:
            raise InvalidRequest(f"unknown datastore kind {self.kind!r} (one of {KINDS})")
        if self.kind == "local":
            if not self.path or not os.path.isabs(self.path):
                raise InvalidRequest("a local datastore needs an absolute path")
            return self
        if self.kind == "blob" and not self.container:
            raise InvalidRequest("a blob datastore needs a container (--container)")
        if self.kind == "fileshare" and not self.share:
            raise InvalidRequest("a file share datastore needs a share (--share)")
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
        }
        strings = {k: d[k] for k in known - {"auth"} if k in d}
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
            return cls(name=name, auth=ref, **strings).validate()
        except (InvalidRequest, TypeError) as e:
            raise ConfigError(f"registry entry {name!r} is invalid: {e}") from None


class Registry:
    """The registry files in one directory (see the module docstring)."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_registry_dir()

    # -- reading --------------------------------------------------------------------------------
    def _read_toml(self, name: str) -> dict[str, Any]:
        path = self.dir / name
        try:
            with open(path, "rb") as f:
                return tomllib.load(f)
        except FileNotFoundError:
            return {}
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None

    def _load(self) -> tuple[dict[str, DatastoreInfo], str | None]:
        data = self._read_toml(DATASTORES_FILE)
        table = data.get("datastores", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{self.dir / DATASTORES_FILE}: 'datastores' is not a table")
        entries = {name: DatastoreInfo.from_toml(name, d) for name, d in table.items()}
        default = data.get("default")
        return entries, default if isinstance(default, str) and default in entries else None

    def list(self) -> list[DatastoreInfo]:
        """Every registered datastore, in registration order."""
        return list(self._load()[0].values())

    def get(self, name: str) -> DatastoreInfo:
        entries, _ = self._load()
        if name not in entries:
            known = ", ".join(entries) or "none registered"
            raise NotFound(f"no datastore named {name!r} is registered (known: {known})")
        return entries[name]

    def default_name(self) -> str | None:
        return self._load()[1]

    def _secrets(self) -> dict[str, str]:
        path = self.dir / SECRETS_FILE
        if not path.exists():
            return {}
        check_private(str(path))
        secrets = self._read_toml(SECRETS_FILE).get("secrets", {})
        if not isinstance(secrets, dict):
            raise ConfigError(f"{path}: 'secrets' is not a table")
        return secrets

    def credential(self, info: DatastoreInfo | str) -> Credential | None:
        """The usable credential of a datastore (None for local ones), secret resolved."""
        if isinstance(info, str):
            info = self.get(info)
        ref = info.auth
        if ref is None:
            return None
        secret: str | None = None
        if ref.source == "stored":
            secret = self._secrets().get(info.name)
            if not secret:
                raise ConfigError(
                    f"the secret of datastore {info.name!r} is missing from "
                    f"{self.dir / SECRETS_FILE}; register it again"
                )
        elif ref.source == "env":
            secret = read_secret_env(ref.ref or "")
        elif ref.source == "file":
            secret = read_secret_file(ref.ref or "")
        d = {"kind": ref.kind, "secret": secret, "client_id": ref.client_id}
        return Credential.from_dict({k: v for k, v in d.items() if v is not None})

    def store(self, info: DatastoreInfo | str, *, retry: RetryPolicy | None = None) -> Store:
        """A Store for the datastore (the caller closes it)."""
        if isinstance(info, str):
            info = self.get(info)
        return make_store(info.storage_spec(self.credential(info)), retry=retry)

    # -- writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot write the registry in {self.dir}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(
        self,
        entries: dict[str, DatastoreInfo],
        default: str | None,
        secrets: dict[str, str] | None = None,
        *,
        secrets_first: bool = True,
    ) -> None:
        """Write the files; a new secret is written before the entry that refers to it, and
        a dropped one after the entry that referred to it is gone."""
        body: dict[str, Any] = {}
        if default is not None:
            body["default"] = default
        body["datastores"] = {name: info.to_toml() for name, info in entries.items()}
        steps = [(DATASTORES_FILE, tomli_w.dumps(body).encode())]
        if secrets is not None:
            step = (SECRETS_FILE, tomli_w.dumps({"secrets": secrets}).encode())
            steps.insert(0 if secrets_first else 1, step)
        try:
            for name, data in steps:
                atomic_write(self.dir / name, data, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot write the registry in {self.dir}: {e.strerror}") from None

    def add(
        self,
        info: DatastoreInfo,
        secret: str | None = None,
        *,
        overwrite: bool = False,
        make_default: bool = False,
    ) -> bool:
        """Register `info` (with its secret when its credential is "stored"). Returns whether
        it is now the default."""
        info.validate()
        if (info.auth is not None and info.auth.source == "stored") != bool(secret):
            raise InvalidRequest("a stored credential needs its secret (and only then)")
        if not info.registered:
            info = replace(info, registered=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        with self._locked():
            entries, default = self._load()
            if info.name in entries and not overwrite:
                raise AlreadyExists(
                    f"a datastore named {info.name!r} is already registered "
                    "(use --overwrite / overwrite=True to replace it)"
                )
            secrets = self._secrets()
            had_secret = info.name in secrets
            if secret:
                secrets[info.name] = secret
            else:
                secrets.pop(info.name, None)
            entries[info.name] = info
            if default is None or make_default:
                default = info.name
            if secret or had_secret:
                self._write(entries, default, secrets, secrets_first=bool(secret))
            else:
                self._write(entries, default)
            return default == info.name

    def remove(self, name: str) -> str | None:
        """Forget a datastore (its data is untouched). Returns the default afterwards."""
        with self._locked():
            entries, default = self._load()
            if name not in entries:
                raise NotFound(f"no datastore named {name!r} is registered")
            del entries[name]
            if default == name or default not in entries:
                default = next(iter(entries), None)  # the earliest-registered one left
            secrets = self._secrets()
            if secrets.pop(name, None) is not None:
                self._write(entries, default, secrets, secrets_first=False)
            else:
                self._write(entries, default)
            return default

    def set_default(self, name: str) -> None:
        with self._locked():
            entries, _ = self._load()
            if name not in entries:
                raise NotFound(f"no datastore named {name!r} is registered")
            self._write(entries, name)


# -- operations shared by the CLI and the Python API -------------------------------------------
@dataclass(frozen=True)
class Registered:
    info: DatastoreInfo
    created: bool  # the container/share/directory was created
    is_default: bool


def register(
    info: DatastoreInfo,
    secret: str | None = None,
    *,
    registry: Registry | None = None,
    overwrite: bool = False,
    create_if_not_exists: bool = False,
    validate: bool = True,
    make_default: bool = False,
) -> Registered:
    """Validate (one cheap call, unless `validate=False`), optionally create the container /
    share / directory, then record the datastore. Nothing is recorded if any step fails."""
    reg = registry or Registry()
    info.validate()
    if not overwrite and any(d.name == info.name for d in reg.list()):
        raise AlreadyExists(
            f"a datastore named {info.name!r} is already registered "
            "(use --overwrite / overwrite=True to replace it)"
        )
    created = False
    if validate or create_if_not_exists:
        credential = _credential_for_check(info, secret)
        # One attempt: a wrong endpoint or key should be told at once, not after backoff.
        with make_store(info.storage_spec(credential), retry=CHECK_RETRY) as store:
            if create_if_not_exists:
                created = store.create()
            if validate:
                try:
                    store.check()
                except NotFound:
                    what = {
                        "blob": "container",
                        "fileshare": "share or directory",
                        "local": "directory",
                    }[info.kind]
                    raise NotFound(
                        f"{info.kind} datastore {info.name!r}: the {what} "
                        f"{store.describe()} does not exist (use "
                        "--create-if-not-exists to create it)"
                    ) from None
                except DsmountError as e:
                    raise type(e)(f"datastore {info.name!r} not registered: {e}") from None
    is_default = reg.add(info, secret, overwrite=overwrite, make_default=make_default)
    return Registered(info, created, is_default)


def _credential_for_check(info: DatastoreInfo, secret: str | None) -> Credential | None:
    ref = info.auth
    if ref is None:
        return None
    if ref.source == "env":
        secret = read_secret_env(ref.ref or "")
    elif ref.source == "file":
        secret = read_secret_file(ref.ref or "")
    d = {"kind": ref.kind, "secret": secret, "client_id": ref.client_id}
    return Credential.from_dict({k: v for k, v in d.items() if v is not None})


def versions(name: str, *, registry: Registry | None = None) -> list[int]:
    """The committed versions of datastore `name`, ascending."""
    reg = registry or Registry()
    with reg.store(name) as store:
        files, _ = store.list_dir(VERSIONS_DIR)
    return sorted(int(m[1]) for f in files if (m := _VERSION_FILE.fullmatch(f)) and m[2] == "json")


def create_version(
    name: str, src_dir: str | Path, *, registry: Registry | None = None, quiet: bool = True
) -> tuple[int, Any]:
    """Upload the CONTENTS of `src_dir` as the next version N of datastore `name`.
    Returns (N, the transfer summary)."""
    from dsmount.workspace import transfer

    reg = registry or Registry()
    sources = transfer.local_tree(src_dir)
    if not sources:
        raise InvalidRequest(f"{src_dir} holds no files: nothing to store as a version")
    with reg.store(name) as store:
        number = _claim_version(store)
        summary = transfer.upload(
            store, sources, f"{VERSIONS_DIR}/{number}", quiet=quiet, desc=f"{name} v{number}"
        )
        manifest = {
            "version": number,
            "files": len(sources),
            "bytes": sum(s.size for s in sources),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        store.put_bytes(f"{VERSIONS_DIR}/{number}.json", json.dumps(manifest, indent=1).encode())
    return number, summary


def upload(
    datastore: str | DatastoreInfo,
    sources: Sequence[LocalFile],
    target_path: str = "",
    *,
    registry: Registry | None = None,
    overwrite: bool = False,
    quiet: bool = True,
) -> TransferSummary:
    """Upload `sources` (`transfer.local_tree` / `local_files`) below `target_path`
    of a registered datastore: what `dsmount upload` and `Datastore.upload*` do."""
    from dsmount.workspace import transfer

    with (registry or Registry()).store(datastore) as store:
        return transfer.upload(store, sources, target_path, overwrite=overwrite, quiet=quiet)


def download(
    datastore: str | DatastoreInfo,
    dest: str | Path,
    prefix: str = "",
    *,
    registry: Registry | None = None,
    overwrite: bool = False,
    quiet: bool = True,
) -> TransferSummary:
    """Download `prefix` (default: all) of a registered datastore into directory `dest`: what
    `dsmount download` and `Datastore.download` do."""
    from dsmount.workspace import transfer

    with (registry or Registry()).store(datastore) as store:
        return transfer.download(store, dest, prefix, overwrite=overwrite, quiet=quiet)


def _claim_version(store: Store) -> int:
    for _ in range(20):  # another writer may claim the same number first: look again
        files, dirs = store.list_dir(VERSIONS_DIR)
        used = {int(m[1]) for f in files if (m := _VERSION_FILE.fullmatch(f))}
        used |= {int(d) for d in dirs if d.isdigit()}
        number = max(used, default=0) + 1
        claim = json.dumps({"claimed": time.time(), "pid": os.getpid()}).encode()
        if store.put_bytes(f"{VERSIONS_DIR}/{number}.claim", claim, exclusive=True):
            return number
    raise BackendError("could not claim a new version number (too many concurrent writers)")


def attach_spec_for(
    name: str, version: str | None = None, *, registry: Registry | None = None
) -> dict[str, Any]:
    """The attach request fields (`DatastoreSpec` wire form, secret included) of a registered
    datastore, or of one of its versions (then immutable; `version` normalized, "latest"
    resolved to the highest committed version)."""
    reg = registry or Registry()
    info = reg.get(name)
    spec = info.storage_spec(reg.credential(info))
    extra: dict[str, Any] = {}
    if version is not None:
        known = versions(name, registry=reg)
        if str(version) == "latest" and known:
            version = str(known[-1])
        number = parse_version(version) if str(version) != "latest" else 0
        if number not in known:
            listed = ", ".join(map(str, known)) or "none yet: dsmount datastore create"
            raise NotFound(f"datastore {name!r} has no version {number} (versions: {listed})")
        spec = spec.below(f"{VERSIONS_DIR}/{number}")
        extra = {"version": str(number), "immutable": True}
    return {**spec.to_dict(secrets=True), **extra}
