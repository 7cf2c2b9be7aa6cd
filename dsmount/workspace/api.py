"""The Python API: datastores as a workspace, for notebooks and scripts.

It mirrors the verbs of Azure ML's `Workspace` / `Datastore` / `DataReference`:

    from dsmount.api import Workspace, Datastore
    ws = Workspace()                                  # the registry (dsmount.workspace.registry)
    ds = Datastore.register_azure_blob_container(ws, "cats", "cats", "myacct",
                                                 account_key=key, create_if_not_exists=True)
    ds.upload("data/", target_path="train", show_progress=True)
    ds.download("/tmp/cats", prefix="train")
    ws.get_default_datastore(); ws.set_default_datastore("cats"); ws.datastores["cats"]
    ds.read_as_text("train/labels.csv"); ds.to_dataframe("train/labels.csv")
    ws.run(["python", "train.py", "--data", ds.path("train").as_mount(),
            "--out", ds.path("models").as_upload("out/")])

Everything here is a thin layer over the functions the CLI calls (`registry`, `transfer`,
`runwrap` in `dsmount.workspace`): there is one implementation of each verb. Errors are
`dsmount.errors` types; secrets given to `register_*` are stored only in the registry's 0600
secrets file and never shown (`repr` included).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from dsmount.errors import InvalidRequest, NotFound
from dsmount.storage.files import Files
from dsmount.storage.names import clean_path
from dsmount.workspace import registry as _registry
from dsmount.workspace import runwrap, transfer
from dsmount.workspace import versions as _versions
from dsmount.workspace.datasets import Datasets
from dsmount.workspace.entries import CredentialRef, DatastoreInfo
from dsmount.workspace.range_reader import RangeReader
from dsmount.workspace.references import DataReference
from dsmount.workspace.registry import Registry

__all__ = ["DataReference", "Datastore", "Workspace"]

_READ_BUFFER = 4 * 1024 * 1024  # one ranged GET per 4 MiB when reading through `open`


class Workspace:
    """The registry of named datastores (see dsmount.workspace.registry for where it lives)."""

    def __init__(
        self,
        registry_dir: str | Path | None = None,
        *,
        socket: str | None = None,
        workspace_id: str | None = None,
        authorization_token: str | None = None,
    ) -> None:
        if workspace_id is not None or authorization_token is not None:
            # The Azure ML client's spelling: say what takes its place rather than a TypeError.
            raise InvalidRequest(
                "a dsmount workspace is a registry of datastores, not a service account: use "
                "Workspace() or Workspace(registry_dir); credentials belong to the datastores "
                "(Datastore.register_azure_blob_container)"
            )
        self.registry = Registry(registry_dir)
        self.socket = socket  # the daemon's control socket, for `run` (default: DSMOUNT_SOCKET)

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Workspace:
        """Azure ML's spelling: `path` is a registry directory (default: the usual one)."""
        return cls(path)

    @property
    def datastores(self) -> dict[str, Datastore]:
        return {info.name: Datastore(self, info) for info in self.registry.list()}

    @property
    def datasets(self) -> Datasets:
        """The datasets: those in the default datastore, then the examples (dsmount.workspace.
        datasets); `ws.datasets['name']`, `ws.datasets[0]`, `ws.datasets.add_from_dataframe`."""
        return Datasets(self.registry)

    @property
    def user_datasets(self) -> Datasets:
        return Datasets(self.registry, which="user")

    @property
    def example_datasets(self) -> Datasets:
        return Datasets(self.registry, which="example")

    def get_default_datastore(self) -> Datastore:
        name = self.registry.default_name()
        if name is None:
            raise NotFound(f"no datastore is registered in {self.registry.dir}")
        return Datastore.get(self, name)

    def set_default_datastore(self, name: str) -> None:
        self.registry.set_default(name)

    def run(
        self,
        command: Sequence[str | DataReference],
        references: Iterable[DataReference] = (),
        *,
        workdir: str | Path | None = None,
        quiet: bool = False,
    ) -> int:
        """Run `command` like `dsmount run`: DataReference items in it (and `references`)
        are prepared first and replaced by their path on this node; returns the exit status."""
        refs: list[DataReference] = list(references)
        argv: list[str] = []
        for item in command:
            if isinstance(item, DataReference):
                if item not in refs:
                    refs.append(item)
                argv.append(item.to_reference().placeholder)
            else:
                argv.append(str(item))
        return runwrap.run(
            [r.to_reference() for r in refs],
            argv,
            socket=self.socket,
            workdir=workdir,
            quiet=quiet,
            registry=self.registry,
        )

    def __repr__(self) -> str:
        return f"Workspace({str(self.registry.dir)!r})"


def _credential(
    *,
    account_key: str | None,
    sas_token: str | None,
    connection_string: str | None,
    use_azure_ad: bool,
    client_id: str | None,
    anonymous: bool = False,
) -> tuple[CredentialRef, str | None]:
    given = [
        (k, v)
        for k, v in (
            ("account_key", account_key),
            ("sas_token", sas_token),
            ("connection_string", connection_string),
        )
        if v
    ]
    if len(given) + int(use_azure_ad) + int(anonymous) > 1:
        raise InvalidRequest("give one way to authenticate")
    if given:
        kind, secret = given[0]
        return CredentialRef(kind, "stored"), secret
    if anonymous:
        return CredentialRef("anonymous"), None
    # Nothing given: Azure AD (managed identity on compute nodes), as the service does.
    return CredentialRef("azure_ad", client_id=client_id), None


class Datastore:
    """One registered datastore: upload, download, read, reference in a run."""

    def __init__(self, workspace: Workspace, info: DatastoreInfo) -> None:
        self.workspace = workspace
        self.info = info

    # -- registration ---------------------------------------------------------------------------
    @classmethod
    def get(cls, workspace: Workspace, datastore_name: str) -> Datastore:
        return cls(workspace, workspace.registry.get(datastore_name))

    @classmethod
    def register_azure_blob_container(
        cls,
        workspace: Workspace,
        datastore_name: str,
        container_name: str,
        account_name: str | None = None,
        sas_token: str | None = None,
        account_key: str | None = None,
        *,
        connection_string: str | None = None,
        use_azure_ad: bool = False,
        client_id: str | None = None,
        anonymous: bool = False,
        prefix: str = "",
        endpoint: str | None = None,
        overwrite: bool = False,
        create_if_not_exists: bool = False,
        skip_validation: bool = False,
        set_default: bool = False,
    ) -> Datastore:
        """Register a blob container (optionally only `prefix` inside it)."""
        credential = _credential(
            account_key=account_key,
            sas_token=sas_token,
            connection_string=connection_string,
            use_azure_ad=use_azure_ad,
            client_id=client_id,
            anonymous=anonymous,
        )
        return cls._register_azure(
            workspace, "blob", datastore_name, container_name, account_name, prefix, endpoint,
            credential, overwrite, create_if_not_exists, skip_validation, set_default,
        )  # fmt: skip

    @classmethod
    def register_azure_file_share(
        cls,
        workspace: Workspace,
        datastore_name: str,
        file_share_name: str | None = None,
        account_name: str | None = None,
        sas_token: str | None = None,
        account_key: str | None = None,
        *,
        connection_string: str | None = None,
        use_azure_ad: bool = False,
        client_id: str | None = None,
        prefix: str = "",
        endpoint: str | None = None,
        overwrite: bool = False,
        create_if_not_exists: bool = False,
        skip_validation: bool = False,
        set_default: bool = False,
        container_name: str | None = None,
    ) -> Datastore:
        """Register an Azure file share. (`container_name` is accepted for the share name,
        as in the Azure ML documentation's example.)"""
        share = file_share_name or container_name
        if not share:
            raise InvalidRequest("give file_share_name")
        credential = _credential(
            account_key=account_key,
            sas_token=sas_token,
            connection_string=connection_string,
            use_azure_ad=use_azure_ad,
            client_id=client_id,
        )
        return cls._register_azure(
            workspace, "fileshare", datastore_name, share, account_name, prefix, endpoint,
            credential, overwrite, create_if_not_exists, skip_validation, set_default,
        )  # fmt: skip

    @classmethod
    def register_local(
        cls,
        workspace: Workspace,
        datastore_name: str,
        path: str | Path,
        *,
        overwrite: bool = False,
        create_if_not_exists: bool = False,
        skip_validation: bool = False,
        set_default: bool = False,
    ) -> Datastore:
        """Register a local directory."""
        info = DatastoreInfo.local(datastore_name, path)
        return cls._register(
            workspace, info, None, overwrite, create_if_not_exists, skip_validation, set_default
        )

    @classmethod
    def _register_azure(
        cls,
        workspace: Workspace,
        kind: str,
        name: str,
        where: str,
        account: str | None,
        prefix: str,
        endpoint: str | None,
        credential: tuple[CredentialRef, str | None],
        overwrite: bool,
        create: bool,
        skip_validation: bool,
        set_default: bool,
    ) -> Datastore:
        """What the two `register_azure_*` do (`where`: the container or share)."""
        auth, secret = credential
        info = DatastoreInfo.azure(
            name, kind, where, account=account, endpoint=endpoint, prefix=prefix, auth=auth
        )
        return cls._register(
            workspace, info, secret, overwrite, create, skip_validation, set_default
        )

    @classmethod
    def _register(
        cls,
        workspace: Workspace,
        info: DatastoreInfo,
        secret: str | None,
        overwrite: bool,
        create: bool,
        skip_validation: bool,
        set_default: bool,
    ) -> Datastore:
        done = _registry.register(
            info,
            secret,
            registry=workspace.registry,
            overwrite=overwrite,
            create_if_not_exists=create,
            validate=not skip_validation,
            make_default=set_default,
        )
        return cls(workspace, done.info)

    def unregister(self) -> None:
        """Forget this datastore (its data is untouched)."""
        self.workspace.registry.remove(self.name)

    # -- description ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def datastore_type(self) -> str:
        return self.info.datastore_type

    @property
    def container_name(self) -> str | None:
        return self.info.container or self.info.share

    @property
    def account_name(self) -> str | None:
        return self.info.account

    @property
    def is_default(self) -> bool:
        return self.workspace.registry.default_name() == self.name

    def __repr__(self) -> str:
        return f"Datastore({self.name!r}, {self.datastore_type}, {self.info.location()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Datastore) and other.info == self.info

    def __hash__(self) -> int:
        return hash(self.info)

    def _store(self) -> Files:
        return self.workspace.registry.store(self.info)

    @property
    def datasets(self) -> Datasets:
        """The datasets kept in this datastore (`ws.datasets` is the default datastore's)."""
        return Datasets(self.workspace.registry, self.name, which="user")

    # -- transfers ------------------------------------------------------------------------------
    def upload(
        self,
        src_dir: str | Path,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> transfer.TransferSummary:
        """Upload the contents of `src_dir` below `target_path` (default: the root)."""
        return self._upload(transfer.local_tree(src_dir), target_path, overwrite, show_progress)

    def upload_files(
        self,
        files: Iterable[str | Path],
        relative_root: str | Path | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> transfer.TransferSummary:
        """Upload files, each named by its path below `relative_root` (default: its name)."""
        sources = transfer.local_files(files, relative_root)
        return self._upload(sources, target_path, overwrite, show_progress)

    def _upload(
        self,
        sources: list[transfer.LocalFile],
        target_path: str | None,
        overwrite: bool,
        show_progress: bool,
    ) -> transfer.TransferSummary:
        return _registry.upload(
            self.info,
            sources,
            target_path or "",
            registry=self.workspace.registry,
            overwrite=overwrite,
            quiet=not show_progress,
        )

    def download(
        self,
        target_path: str | Path,
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> transfer.TransferSummary:
        """Download everything below `prefix` (default: all) into directory `target_path`."""
        return _registry.download(
            self.info,
            target_path,
            prefix or "",
            registry=self.workspace.registry,
            overwrite=overwrite,
            quiet=not show_progress,
        )

    def create_version(
        self, src_dir: str | Path, show_progress: bool = True, pack: bool = True
    ) -> int:
        """Upload the contents of `src_dir` as the next immutable version (small files packed
        unless `pack=False`); its number."""
        number, _ = _versions.create_version(
            self.name, src_dir, registry=self.workspace.registry, quiet=not show_progress,
            pack=pack,
        )
        return number

    def snapshot(self, prefix: str = "") -> int:
        """Pin what the datastore holds below `prefix` now as the next version; its number."""
        number, _ = _versions.snapshot(self.name, prefix, registry=self.workspace.registry)
        return number

    def versions(self) -> list[int]:
        return _versions.versions(self.name, registry=self.workspace.registry)

    # -- references -----------------------------------------------------------------------------
    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        return DataReference(self, clean_path(path or ""), data_reference_name or self.name)

    def as_mount(self, version: str | int | None = None) -> DataReference:
        return self.path().as_mount(version)

    def as_download(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        return self.path().as_download(path_on_compute, overwrite)

    def as_upload(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        return self.path().as_upload(path_on_compute, overwrite)

    # -- reading --------------------------------------------------------------------------------
    def open(self, path: str, mode: str = "rb", encoding: str | None = None) -> IO[Any]:
        """A read-only file object ("rb" or "r") streaming the file with ranged reads."""
        if mode not in ("r", "rb", "rt"):
            raise InvalidRequest("datastores are opened read-only: mode 'rb' or 'r'")
        store = self._store()
        try:
            f = store.stat(path)
            if f is None:
                raise NotFound(f"{self.name}: no file {path!r}")
        except BaseException:
            store.close()
            raise
        raw = RangeReader(store, f.read_path, f.size)
        binary = io.BufferedReader(raw, buffer_size=_READ_BUFFER)
        if mode == "rb":
            return binary
        return io.TextIOWrapper(binary, encoding=encoding or "utf-8")

    def read_as_binary(self, path: str) -> bytes:
        with self.open(path, "rb") as f:
            return f.read()  # type: ignore[no-any-return]

    def read_as_text(self, path: str, encoding: str = "utf-8") -> str:
        with self.open(path, "r", encoding=encoding) as f:
            return f.read()  # type: ignore[no-any-return]

    def to_dataframe(self, path: str, format: str | None = None, **kwargs: Any) -> Any:
        """A pandas DataFrame from a CSV, TSV or Parquet file (by suffix unless `format`)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Datastore.to_dataframe needs pandas (and pyarrow for Parquet): "
                "pip install 'dsmount[dataframe]'"
            ) from None
        kind = (format or Path(path).suffix.lstrip(".")).lower()
        kind = {"tab": "tsv", "pq": "parquet"}.get(kind, kind)
        if kind not in ("csv", "tsv", "parquet"):
            raise InvalidRequest(
                f"cannot tell the format of {path!r}: give format='csv', 'tsv' or 'parquet'"
            )
        with self.open(path, "rb") as f:
            if kind == "parquet":
                try:
                    return pd.read_parquet(f, **kwargs)
                except ImportError as e:
                    raise ImportError(
                        f"reading Parquet needs pyarrow: pip install 'dsmount[dataframe]' ({e})"
                    ) from None
            if kind == "tsv":
                kwargs.setdefault("sep", "\t")
            return pd.read_csv(f, **kwargs)
