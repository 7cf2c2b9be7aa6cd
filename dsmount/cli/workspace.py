"""`dsmount datastore ...`, `dsmount upload`, `dsmount download`, `dsmount run`: the workspace
commands. `COMMANDS` lists the click objects to add to the `dsmount` group.

Every command calls the same functions as the Python API (`dsmount.workspace`: registry,
transfer, runwrap). Errors are one line on stderr ("dsmount: ...") and exit status 1 (`run`:
125, see dsmount.workspace.runwrap); Ctrl-C exits 130. Secrets are read from an environment
variable or a 0600 file, never from argv, and never printed.

The auth options are `dsmount attach`'s (`dsmount.cli.common`), plus `--by-reference`:
registering can keep *where* a secret lives instead of the secret.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from dsmount.cli.common import (
    SECRET_KINDS,
    AuthChoice,
    auth_options,
    choose_auth,
    guarded,
    print_table,
)
from dsmount.errors import InvalidRequest
from dsmount.workspace import registry as reg
from dsmount.workspace import runwrap, transfer
from dsmount.workspace import versions as ver
from dsmount.workspace.entries import CredentialRef, DatastoreInfo
from dsmount.workspace.registry import Registry


def _credential(
    by_reference: bool = False, account: str | None = None, **auth: Any
) -> tuple[CredentialRef, str | None, str | None]:
    """(credential reference, secret to store, account the environment named) from the auth
    options: exactly one source. Azure's env variables (no auth flag) are taken like
    `--*-env VAR`: the secret is stored, or with --by-reference the variable's name is."""
    choice = choose_auth(auth, account=account)
    if choice.note:
        click.echo(f"dsmount: {choice.note}", err=True)
    ref, secret = _reference(choice, by_reference)
    return ref, secret, choice.account


def _reference(choice: AuthChoice, by_reference: bool) -> tuple[CredentialRef, str | None]:
    if choice.kind not in SECRET_KINDS:
        if by_reference:
            raise click.UsageError("--by-reference needs a --*-env or --*-file option")
        return CredentialRef(choice.kind, client_id=choice.client_id), None
    if by_reference:
        if choice.env:
            return CredentialRef(choice.kind, "env", choice.env), None
        return CredentialRef(choice.kind, "file", os.path.abspath(choice.file or "")), None
    return CredentialRef(choice.kind, "stored"), choice.secret()


def _register_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--overwrite", is_flag=True, help="Replace a datastore of the same name."),
        click.option(
            "--create-if-not-exists",
            is_flag=True,
            help="Create the container / share / directory if missing.",
        ),
        click.option(
            "--skip-validation",
            is_flag=True,
            help="Do not check that it exists and the credentials work.",
        ),
        click.option("--set-default", is_flag=True, help="Make it the default datastore."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _register(
    info: DatastoreInfo,
    secret: str | None,
    overwrite: bool,
    create: bool,
    skip_validation: bool,
    set_default: bool,
) -> None:
    done = reg.register(
        info,
        secret,
        overwrite=overwrite,
        create_if_not_exists=create,
        validate=not skip_validation,
        make_default=set_default,
    )
    notes = []
    if done.created:
        notes.append("created")
    if done.is_default:
        notes.append("default")
    extra = f" [{', '.join(notes)}]" if notes else ""
    click.echo(f"registered {info.kind} datastore {info.name!r} ({info.location()}){extra}")


# -- dsmount datastore ------------------------------------------------------------------------
@click.group("datastore")
def datastore() -> None:
    """Registered datastores (the workspace): register once, then use by name."""


def _location_options(what: str, endpoint_help: str) -> Callable[..., Any]:
    """--account, --prefix, --endpoint: where an Azure datastore lives (`what`: its unit)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(
            [
                click.option("--account", help="Storage account name."),
                click.option("--prefix", default="", help=f"Only this {what}."),
                click.option("--endpoint", help=endpoint_help),
                click.option("--read-write", is_flag=True,
                             help="`dsmount attach NAME` attaches it read-write by default."),
            ]
        ):
            fn = opt(fn)
        return fn

    return wrap


def _register_azure(
    kind: str,
    name: str,
    where: str,
    *,
    account: str | None,
    prefix: str,
    endpoint: str | None,
    overwrite: bool,
    create_if_not_exists: bool,
    skip_validation: bool,
    set_default: bool,
    read_write: bool = False,
    **auth: Any,
) -> None:
    """What `register-blob` and `register-fileshare` do (`where`: container or share)."""
    ref, secret, env_account = _credential(account=account, **auth)
    info = DatastoreInfo.azure(
        name, kind, where, account=account or env_account, endpoint=endpoint, prefix=prefix,
        auth=ref, read_write=read_write,
    )
    _register(info, secret, overwrite, create_if_not_exists, skip_validation, set_default)


@datastore.command("register-blob")
@click.argument("name")
@click.option("--container", required=True, help="Blob container name.")
@_location_options("prefix of the container", "Account URL (Azurite, sovereign clouds).")
@auth_options(registry=True)
@_register_flags
@guarded()
def register_blob(name: str, container: str, **options: Any) -> None:
    """Register an Azure blob container as datastore NAME."""
    _register_azure("blob", name, container, **options)


@datastore.command("register-fileshare")
@click.argument("name")
@click.option("--share", required=True, help="File share name.")
@_location_options("directory of the share", "Account URL (emulators, sovereign clouds).")
@auth_options(registry=True)
@_register_flags
@guarded()
def register_fileshare(name: str, share: str, **options: Any) -> None:
    """Register an Azure file share as datastore NAME."""
    _register_azure("fileshare", name, share, **options)


@datastore.command("register-local")
@click.argument("name")
@click.argument("path")
@_register_flags
@guarded()
def register_local(
    name: str,
    path: str,
    overwrite: bool,
    create_if_not_exists: bool,
    skip_validation: bool,
    set_default: bool,
) -> None:
    """Register a local directory PATH as datastore NAME."""
    info = DatastoreInfo.local(name, path)
    _register(info, None, overwrite, create_if_not_exists, skip_validation, set_default)


@datastore.command("list")
@click.option("--json", "as_json", is_flag=True)
@guarded()
def list_datastores(as_json: bool) -> None:
    """Registered datastores; the default is marked with "*"."""
    registry = Registry()
    default = registry.default_name()
    infos = registry.list()
    if as_json:
        click.echo(
            json.dumps([{**i.public_dict(), "default": i.name == default} for i in infos], indent=2)
        )
        return
    if not infos:
        click.echo(f"no datastores registered (registry: {registry.dir})")
        return
    rows = [
        [
            i.name,
            i.kind,
            "*" if i.name == default else "",
            i.location(),
            i.auth.describe() if i.auth else "-",
        ]
        for i in infos
    ]
    print_table(rows, ["NAME", "KIND", "DEFAULT", "LOCATION", "AUTH"])


@datastore.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@guarded()
def show(name: str, as_json: bool) -> None:
    """Details of datastore NAME (never its secret)."""
    registry = Registry()
    info = registry.get(name)
    d = {**info.public_dict(), "default": registry.default_name() == name}
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    d.pop("auth", None)
    d["auth"] = d.pop("auth_description", "-")
    for key, value in d.items():
        shown = {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value
        click.echo(f"{key + ':':<16}{shown}")


@datastore.command("set-default")
@click.argument("name")
@guarded()
def set_default(name: str) -> None:
    """Make NAME the default datastore."""
    Registry().set_default(name)
    click.echo(f"default datastore is now {name!r}")


@datastore.command("remove")
@click.argument("name")
@guarded()
def remove(name: str) -> None:
    """Forget datastore NAME (its data is not touched)."""
    registry = Registry()
    was_default = registry.default_name() == name
    default = registry.remove(name)
    click.echo(f"removed {name!r} from the registry (its data is untouched)")
    if was_default:
        click.echo(
            f"default datastore is now {default!r}" if default else "no default datastore left"
        )


@datastore.command("create")
@click.argument("name")
@click.argument("src_dir", type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--no-pack", is_flag=True, help="Store every file as an object of its own.")
@guarded()
def create(name: str, src_dir: str, quiet: bool, no_pack: bool) -> None:
    """Upload the contents of SRC_DIR as the next immutable version of NAME.

    Files under 1 MiB are packed into ~32 MiB pack objects (one request serves many files);
    a manifest lets the version mount with no listing at all."""
    number, summary = ver.create_version(name, src_dir, quiet=quiet, pack=not no_pack)
    click.echo(f"created version {number} of {name!r}: {summary}")
    click.echo(f"attach it with: dsmount attach {name} --version {number}")


@datastore.command("snapshot")
@click.argument("name")
@click.option("--prefix", default="", help="Snapshot only this prefix (it becomes the root).")
@guarded()
def snapshot(name: str, prefix: str) -> None:
    """Make a version of what NAME holds now, without copying: every object's ETag is pinned,
    so an object changed later reads as ESTALE through the mount, never as mixed bytes."""
    number, files = ver.snapshot(name, prefix)
    click.echo(f"snapshot version {number} of {name!r}: {files} file(s) pinned")
    click.echo(f"attach it with: dsmount attach {name} --version {number}")


@datastore.command("versions")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@guarded()
def versions(name: str, as_json: bool) -> None:
    """The versions of datastore NAME."""
    found = ver.versions(name)
    if as_json:
        click.echo(json.dumps(found))
    elif not found:
        click.echo(f"{name!r} has no versions (create one: dsmount datastore create {name} DIR)")
    else:
        for n in found:
            click.echo(n)


# -- upload / download ------------------------------------------------------------------------
@click.command("upload")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True, metavar="SRC...")
@click.option("--target-path", default="", help="Where in the datastore [its root].")
@click.option("--overwrite", is_flag=True, help="Replace files that differ.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@guarded()
def upload(
    name: str, sources: tuple[str, ...], target_path: str, overwrite: bool, quiet: bool
) -> None:
    """Upload a directory's contents, or a list of files, to datastore NAME."""
    if len(sources) == 1 and os.path.isdir(sources[0]):
        files = transfer.local_tree(sources[0])
    else:
        files = transfer.local_files(sources)
    summary = reg.upload(name, files, target_path, overwrite=overwrite, quiet=quiet)
    click.echo(summary)


@click.command("download")
@click.argument("name")
@click.argument("dest")
@click.option("--prefix", default="", help="Only this path of the datastore [all].")
@click.option("--overwrite", is_flag=True, help="Replace local files that differ.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@guarded()
def download(name: str, dest: str, prefix: str, overwrite: bool, quiet: bool) -> None:
    """Download datastore NAME (or PREFIX of it) into directory DEST."""
    summary = reg.download(name, dest, prefix, overwrite=overwrite, quiet=quiet)
    click.echo(summary)


# -- run --------------------------------------------------------------------------------------
def _refs(
    parse: Callable[[str], runwrap.Reference], values: tuple[str, ...], overwrite: bool
) -> list[runwrap.Reference]:
    out = []
    for v in values:
        r = parse(v)
        if overwrite and r.mode not in ("mount", "mount-rw"):
            r = runwrap.Reference(r.mode, r.datastore, r.path, r.version, r.local, r.ref, True)
        out.append(r)
    return out


@click.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="[REF@]NAME[:VERSION][/PATH]",
    help="Attach (if needed) and pass the path under the mountpoint.",
)
@click.option(
    "--mount-rw",
    "mounts_rw",
    multiple=True,
    metavar="[REF@]NAME[/PATH]",
    help="Attach read-write; outputs written there reach the datastore as files close.",
)
@click.option(
    "--download",
    "downloads",
    multiple=True,
    metavar="[REF@]NAME[:VERSION][/PATH][=DIR]",
    help="Download before the command starts.",
)
@click.option(
    "--upload",
    "uploads",
    multiple=True,
    metavar="[REF@]NAME[/PATH]=LOCAL_PATH",
    help="Upload LOCAL_PATH after the command exits.",
)
@click.option("--workdir", default=None, help="Where downloads go [a temp dir, removed after].")
@click.option("--overwrite", is_flag=True, help="Uploads/downloads replace files that differ.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
@guarded(runwrap.EXIT_DSMOUNT_FAILED)
def run(
    ctx: click.Context,
    mounts: tuple[str, ...],
    mounts_rw: tuple[str, ...],
    downloads: tuple[str, ...],
    uploads: tuple[str, ...],
    workdir: str | None,
    overwrite: bool,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with data references: DSMOUNT_DATAREFERENCE_<REF> is set to each
    reference's path and {REF} in the arguments replaced by it.

    \b
    dsmount run --mount cats:1 --upload cats/out=./out -- python train.py {cats} ./out
    dsmount run --mount cats:1 --mount-rw out@cats/runs/42 -- python train.py {cats} {out}
    """
    refs = (
        _refs(runwrap.parse_mount, mounts, False)
        + _refs(runwrap.parse_mount_rw, mounts_rw, False)
        + _refs(runwrap.parse_download, downloads, overwrite)
        + _refs(runwrap.parse_upload, uploads, overwrite)
    )
    socket = getattr(ctx.find_root().obj, "socket", None)
    if not command:
        raise InvalidRequest("no command given: dsmount run [references] -- COMMAND [ARGS...]")
    code = runwrap.run(refs, list(command), socket=socket, workdir=workdir, quiet=quiet)
    sys.exit(code)


COMMANDS: list[click.Command] = [datastore, upload, download, run]
