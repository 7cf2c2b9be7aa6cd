"""`dsmount dataset list|show|create|update|download|remove`: named datasets from the command
line. Every command calls `dsmount.workspace.datasets`, the implementation the Python API
(`Workspace.datasets`) uses; this module only parses options and prints.

Datasets live in the default datastore unless `--datastore NAME` says otherwise; the examples
shipped with dsmount are listed too (`--user` / `--examples` narrow the list).
"""

from __future__ import annotations

import json
from typing import Any

import click

from dsmount.cli.common import guarded, print_table
from dsmount.shared.sizes import format_size
from dsmount.workspace.datasets import Dataset, Datasets, resolve_datastore
from dsmount.workspace.datasets_types import KNOWN_TYPES
from dsmount.workspace.registry import Registry

_TYPE = click.Choice(KNOWN_TYPES)


def _datasets(datastore: str | None, which: str = "all") -> Datasets:
    return Datasets(Registry(), datastore, which)


def _datastore_option(fn: Any) -> Any:
    return click.option(
        "--datastore", "-d", default=None, metavar="NAME",
        help="The datastore holding the datasets [the default datastore].",
    )(fn)  # fmt: skip


def _show(ds: Dataset, as_json: bool) -> None:
    d = ds.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for key in ("name", "description", "data_type_id", "size", "created_date", "family_id",
                "id", "datastore", "version", "path", "object"):  # fmt: skip
        value = d[key]
        if key == "size":
            value = f"{value} ({format_size(value)})"
        if key == "object" and ds.is_example:
            continue
        click.echo(f"{key + ':':<14}{'-' if value is None else value}")


@click.group("dataset")
def dataset() -> None:
    """Named datasets: tables and files with a name, a type and a description, kept as
    immutable versions of a datastore."""


@dataset.command("list")
@_datastore_option
@click.option("--user", "which", flag_value="user", help="Only the user datasets.")
@click.option("--examples", "which", flag_value="example", help="Only the examples.")
@click.option("--json", "as_json", is_flag=True)
@guarded()
def list_datasets(datastore: str | None, which: str | None, as_json: bool) -> None:
    """The datasets: the datastore's, then the examples shipped with dsmount."""
    found = list(_datasets(datastore, which or "all"))
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in found], indent=2))
        return
    rows = [
        [str(i), d.name, d.data_type_id, format_size(d.size), d.datastore or "(example)",
         d.created_date.strftime("%Y-%m-%d %H:%M")]
        for i, d in enumerate(found)
    ]  # fmt: skip
    print_table(rows, ["#", "NAME", "TYPE", "SIZE", "DATASTORE", "CREATED"])


@dataset.command("show")
@click.argument("name")
@_datastore_option
@click.option("--json", "as_json", is_flag=True)
@guarded()
def show(name: str, datastore: str | None, as_json: bool) -> None:
    """Metadata of dataset NAME and where its data is."""
    _show(_datasets(datastore)[name], as_json)


@dataset.command("create")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--type", "data_type_id", type=_TYPE, required=True, help="The data type of FILE.")
@click.option("--description", default="", help="What the dataset holds.")
@_datastore_option
@click.option("--json", "as_json", is_flag=True)
@guarded()
def create(
    name: str, file: str, data_type_id: str, description: str, datastore: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Store FILE (already in --type) as the new dataset NAME. A name in use is an error."""
    ds = _datasets(datastore, "user").add_from_file(file, data_type_id, name, description)
    if as_json:
        _show(ds, True)
    else:
        click.echo(f"created dataset {ds.name!r} in datastore {ds.datastore!r}: {ds.path}")


@dataset.command("update")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--type", "data_type_id", type=_TYPE, default=None, help="[as now]")
@click.option("--name", "new_name", default=None, help="A new name [as now].")
@click.option("--description", default=None, help="A new description [as now].")
@_datastore_option
@click.option("--json", "as_json", is_flag=True)
@guarded()
def update(
    name: str, file: str, data_type_id: str | None, new_name: str | None,
    description: str | None, datastore: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Replace the data of dataset NAME with FILE; type, name and description stay unless
    given. Readers see the old or the new dataset, never a mix."""
    ds = _datasets(datastore, "user")[name]
    ds.update_from_file(file, data_type_id, new_name, description)
    if as_json:
        _show(ds, True)
    else:
        click.echo(f"updated dataset {ds.name!r} (now {ds.id}): {ds.path}")


@dataset.command("download")
@click.argument("name")
@click.argument("dest", type=click.Path(), default=".")
@_datastore_option
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists.")
@guarded()
def download(name: str, dest: str, datastore: str | None, overwrite: bool) -> None:
    """Write the data of dataset NAME to DEST (a directory: DEST/NAME.SUFFIX)."""
    target = _datasets(datastore)[name].download(dest, overwrite=overwrite)
    click.echo(f"downloaded {name!r} to {target}")


@dataset.command("remove")
@click.argument("name")
@_datastore_option
@guarded()
def remove(name: str, datastore: str | None) -> None:
    """Drop dataset NAME from the datastore's catalog (its versions stay, unreferenced)."""
    where = resolve_datastore(Registry(), datastore)
    _datasets(where, "user").remove(name)
    click.echo(f"removed dataset {name!r} from datastore {where!r}")


COMMANDS = [dataset]
