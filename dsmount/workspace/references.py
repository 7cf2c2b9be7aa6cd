"""`DataReference`: a path in a datastore and how a run gets it (mounted, downloaded, or
uploaded after), as Azure ML's `as_mount` / `as_download` / `as_upload` have it. It turns into
the run wrapper's `Reference`, or into `dsmount run` options."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from dsmount.errors import InvalidRequest
from dsmount.workspace import runwrap


class NamedDatastore(Protocol):
    """What a reference needs of its datastore: its name. The API's `Datastore` is one; the
    API module imports this one, so this one does not import it back."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class DataReference:
    """A path in a datastore and how a run gets it: mounted, downloaded, or uploaded after."""

    datastore: NamedDatastore
    path_on_datastore: str = ""
    data_reference_name: str = ""
    mode: str = "mount"  # mount | download | upload
    path_on_compute: str | None = None
    overwrite: bool = False
    version: str | None = None

    def as_mount(self, version: str | int | None = None) -> DataReference:
        return replace(
            self,
            mode="mount",
            version=None if version is None else str(version),
            path_on_compute=None,
        )

    def as_download(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        return replace(self, mode="download", path_on_compute=path_on_compute, overwrite=overwrite)

    def as_upload(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        if self.version is not None:
            raise InvalidRequest("versions are immutable: upload to the datastore itself")
        return replace(
            self,
            mode="upload",
            path_on_compute=path_on_compute or self.data_reference_name,
            overwrite=overwrite,
        )

    def to_reference(self) -> runwrap.Reference:
        return runwrap.Reference(
            self.mode,
            self.datastore.name,
            self.path_on_datastore,
            self.version,
            self.path_on_compute,
            ref=self.data_reference_name,
            overwrite=self.overwrite,
        )

    def run_options(self) -> list[str]:
        """The `dsmount run` options that declare this reference."""
        r = self.to_reference()
        value = f"{r.ref}@{r.datastore}" if r.ref != r.datastore else r.datastore
        if r.version is not None:
            value += f":{r.version}"
        if r.path:
            value += f"/{r.path}"
        if r.local is not None:
            value += f"={r.local}"
        return [f"--{r.mode}", value]

    @property
    def env_name(self) -> str:
        return runwrap.env_name(self.data_reference_name)

    def __str__(self) -> str:
        # As in Azure ML: the variable that holds the path on the compute node.
        return f"${self.env_name}"
