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
- Versions live in the datastore itself: see `dsmount.workspace.versions`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from dsmount.errors import (
    AlreadyExists,
    ConfigError,
    DsmountError,
    InvalidRequest,
    NotFound,
)
from dsmount.shared.credentials import Credential
from dsmount.shared.fileutil import atomic_write
from dsmount.shared.secretref import check_private, read_secret_env, read_secret_file
from dsmount.storage.factory import open_files
from dsmount.storage.files import Files
from dsmount.storage.retry import RetryPolicy
from dsmount.workspace.entries import (
    DatastoreInfo,
)

CHECK_RETRY = RetryPolicy(max_attempts=1, deadline=30.0)

if TYPE_CHECKING:  # transfer is imported when needed: it pulls in the progress bars
    from dsmount.workspace.transfer import LocalFile, TransferSummary

REGISTRY_ENV = "DSMOUNT_REGISTRY"
DATASTORES_FILE = "datastores.toml"
SECRETS_FILE = "secrets.toml"
LOCK_FILE = ".lock"


def default_registry_dir() -> Path:
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/dsmount/registry")
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "dsmount" / "registry"


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

    def store(self, info: DatastoreInfo | str, *, retry: RetryPolicy | None = None) -> Files:
        """The datastore's whole files, for blocking callers (the caller closes it)."""
        if isinstance(info, str):
            info = self.get(info)
        return open_files(info.storage_spec(self.credential(info)), retry=retry)

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
        with open_files(info.storage_spec(credential), retry=CHECK_RETRY) as store:
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
