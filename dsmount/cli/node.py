"""The node commands of `dsmount`: run the daemon, and attach / detach / list / status / refresh
/ ping through its control socket; `link-home` for Jupyter users. Everything but `daemon`
talks to the daemon only through the control client."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from dsmount.cli.common import Context, auth_options, choose_auth, fail, print_table, run_guarded
from dsmount.errors import DsmountError
from dsmount.shared.sizes import format_size


# -- daemon -----------------------------------------------------------------------------------
@click.command()
@click.option("--mountpoint", default=None, help="Where to mount [/datastores].")
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="TOML config file [env DSMOUNT_CONFIG, else /etc/dsmount/dsmount.toml].")
@click.option("--foreground", is_flag=True, help="Stay in the foreground (systemd, tests).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None)
@click.option("--log-file", default=None, help="Without --foreground: where the daemon logs.")
@click.option("--cache-budget", default=None,
              help="Memory for cached blocks, e.g. 1GiB [min(1GiB, 1/4 of the memory limit)].")
@click.option("--block-size", default=None, help="Block size, e.g. 8MiB.")
@click.option("--cache-dir", default=None, help="Optional on-disk block cache directory.")
@click.option("--state-dir", default=None, help="Where attachments are persisted.")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Control socket to serve [the global --socket, env DSMOUNT_SOCKET, else "
              "[daemon] socket].")
@click.option("--metrics-address", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9464 "
              "[[metrics] address; off unless set].")
@click.option("--transport", type=click.Choice(["pyfuse3", "direct"]), default=None,
              help="How FUSE requests reach the daemon [[fs] transport; direct].")
@click.pass_obj
def daemon(obj: Context, mountpoint: str | None, config_path: str | None, foreground: bool,
           log_level: str | None, log_file: str | None, cache_budget: str | None,
           block_size: str | None, cache_dir: str | None, state_dir: str | None,
           socket_path: str | None, metrics_address: str | None, transport: str | None
           ) -> None:
    """Run the daemon: mount the datastore tree and serve the control socket."""
    from dsmount.node.config import load_config
    from dsmount.node.daemon import daemonize_and_run, run_daemon
    from dsmount.shared.logs import setup_logging

    explicit_socket = socket_path or click.get_current_context().find_root().params.get(
        "socket_path")
    try:
        config = load_config(config_path, {
            "daemon": {"mountpoint": mountpoint, "log_level": log_level, "state_dir": state_dir,
                       "socket": explicit_socket},
            "cache": {"memory_budget": cache_budget, "block_size": block_size,
                      "disk_dir": cache_dir},
            "metrics": {"address": metrics_address},
            "fs": {"transport": transport},
        })
    except DsmountError as e:
        fail(str(e))
        return
    setup_logging(config.daemon.log_level)
    if foreground:
        sys.exit(run_daemon(config))
    sys.exit(daemonize_and_run(config, log_file))


@click.command()
@click.argument("name")
@click.option("--local", "local_path", metavar="PATH", help="Serve a local directory.")
@click.option("--blob", is_flag=True, help="Serve an Azure blob container.")
@click.option("--fileshare", is_flag=True, help="Serve an Azure file share.")
@click.option("--container", help="Blob container name.")
@click.option("--share", help="File share name.")
@click.option("--account", help="Storage account name.")
@click.option("--endpoint", help="Account URL (Azurite, sovereign clouds).")
@click.option("--prefix", default="", help="Serve only this prefix/directory as the root.")
@click.option("--version", "version", default=None, help="Attach as NAME/VERSION.")
@click.option("--immutable", is_flag=True, help="Data never changes: cache without expiry.")
@click.option("--ttl", type=float, default=None, help="Metadata cache TTL in seconds.")
@click.option("--shared", is_flag=True,
              help="Let every user read it (as far as its own modes allow); a user's datastore "
                   "is private to them otherwise.")
@click.option("--uid", type=click.IntRange(0), default=None,
              help="Root only: show every file as owned by this uid.")
@click.option("--gid", type=click.IntRange(0), default=None,
              help="Root only: show every file with this group.")
@click.option("--file-mode", default=None, metavar="MODE",
              help="Root only: show files with these permission bits (e.g. 0440).")
@click.option("--dir-mode", default=None, metavar="MODE",
              help="Root only: show directories with these permission bits (e.g. 0550).")
@click.option("--read-write/--read-only", "read_write", default=None,
              help="Allow writes (blob containers and file shares, not versions) [read-only, "
                   "or the registered datastore's default].")
@auth_options()
@click.pass_obj
def attach(obj: Context, name: str, local_path: str | None, blob: bool, fileshare: bool,
           container: str | None, share: str | None, account: str | None,
           endpoint: str | None, prefix: str, version: str | None, immutable: bool,
           ttl: float | None, shared: bool, uid: int | None, gid: int | None,
           file_mode: str | None, dir_mode: str | None, read_write: bool | None,
           **auth: Any) -> None:
    """Attach a datastore at MOUNTPOINT/NAME (or NAME/VERSION)."""
    kinds = [k for k, on in (("local", local_path), ("blob", blob), ("fileshare", fileshare))
             if on]
    if len(kinds) > 1:
        raise click.UsageError("give one of --local, --blob, --fileshare")
    spec: dict[str, Any] = {"name": name, "immutable": immutable}
    if version is not None:
        spec["version"] = version
    if ttl is not None:
        spec["ttl"] = ttl
    if shared:
        spec["shared"] = True
    # Checked by the daemon (only root may give them; modes are validated there).
    spec.update({k: v for k, v in (("uid", uid), ("gid", gid), ("file_mode", file_mode),
                                   ("dir_mode", dir_mode)) if v is not None})

    def build() -> None:
        if not kinds:
            from dsmount.workspace.versions import attach_spec_for

            spec.update(attach_spec_for(name, version))
        elif local_path:
            spec.update(kind="local", path=os.path.abspath(local_path))
        else:
            if blob and not container:
                raise click.UsageError("--blob needs --container")
            if fileshare and not share:
                raise click.UsageError("--fileshare needs --share")
            choice = choose_auth(auth, account=account)
            if choice.note:
                click.echo(f"dsmount: {choice.note}", err=True)
            spec.update(kind=kinds[0], account=account or choice.account, endpoint=endpoint,
                        prefix=prefix, auth=choice.to_wire())
            spec.update({"container": container} if blob else {"share": share})
        if read_write is not None:
            spec["read_write"] = read_write
        result = obj.call("attach", **{k: v for k, v in spec.items() if v is not None})
        click.echo(f"attached {result['path']} ({result['kind']})")

    run_guarded(build)


@click.command()
@click.argument("name")
@click.option("--version", "version", default=None)
@click.option("--force", is_flag=True,
              help="Detach even with open files (lazy: they stay readable until closed).")
@click.pass_obj
def detach(obj: Context, name: str, version: str | None, force: bool) -> None:
    """Detach a datastore; its directory disappears at once."""
    result = run_guarded(lambda: obj.call("detach", name=name, version=version, force=force))
    click.echo(f"detached {result['detached']}" + (" (lazily)" if result.get("lazy") else ""))


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_(obj: Context, as_json: bool) -> None:
    """List attached datastores."""
    result = run_guarded(lambda: obj.call("list"))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    rows = []
    for d in result["datastores"]:
        b = d.get("backend", {})
        where = b.get("path") or "/".join(
            x for x in (b.get("account"), b.get("container") or b.get("share"), b.get("prefix"))
            if x)
        rows.append([d["path"], d["kind"], _owner(d), "yes" if d["immutable"] else "no",
                     "rw" if d.get("read_write") else "ro", str(d["open_files"]), where])
    for f in result.get("failed", []):
        rows.append([f["path"], f.get("kind") or "?", _owner(f), "-", "-", "-",
                     f"FAILED: {f['error']}"])
    if not rows:
        click.echo("no datastores attached")
        return
    print_table(rows, ["NAME", "KIND", "OWNER", "IMMUTABLE", "MODE", "OPEN", "SOURCE"])


def _owner(d: dict[str, Any]) -> str:
    """Who owns a datastore, and "(private)" when only they (and root) may read it."""
    owner = str(d.get("owner_name") or d.get("owner", "root"))
    return owner if d.get("shared", True) else f"{owner}(private)"


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Daemon and per-datastore counters."""
    result = run_guarded(lambda: obj.call("status"))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    c = result["cache"]
    click.echo(f"daemon pid {result['pid']}, up {result['uptime']:.0f}s, mountpoint "
               f"{result.get('mountpoint')}")
    click.echo(f"cache {format_size(c['cached_bytes'])} cached + "
               f"{format_size(c['in_flight_bytes'])} in flight of "
               f"{format_size(c['budget_bytes'])} (peak {format_size(c['peak_bytes'])})")
    memory = result.get("memory")
    if memory:
        click.echo(f"budget {format_size(memory['budget_bytes'])} ({memory['budget_from']}); "
                   f"limit: {memory['limit']}")
    prefetch = result.get("prefetch")
    if prefetch:
        for label, key in (("hints", "hints"), ("directory order", "dir_order")):
            s = prefetch[key]
            click.echo(f"prefetch by {label}: {s['files_prefetched']} file(s) "
                       f"{format_size(s['bytes_prefetched'])} fetched ahead, "
                       f"{s['files_used']} ({format_size(s['bytes_used'])}) used, "
                       f"{s['files_wasted']} ({format_size(s['bytes_wasted'])}) wasted"
                       + (f"; {prefetch['hints_active']} hint(s) active" if key == "hints"
                          else ""))
    writers = sum(d.get("writers_open", 0) for d in result["datastores"])
    written = sum(d.get("bytes_written", 0) for d in result["datastores"])
    if any(d.get("read_write") for d in result["datastores"]):
        commits = sum(d.get("commits", 0) for d in result["datastores"])
        failed = sum(d.get("failed_commits", 0) for d in result["datastores"])
        click.echo(f"writes {format_size(written)} written, {commits} commit(s), "
                   f"{failed} failed, {writers} writer(s) open")
    rows = []
    for d in result["datastores"]:
        ratio = d["cache_hit_ratio"]
        stall = d.get("read_stall_seconds") or {"count": 0, "sum": 0.0}
        rows.append([
            d["path"], d["state"], format_size(d["bytes_read"]), str(d["blocks_fetched"]),
            "-" if ratio is None else f"{ratio:.0%}", str(d["readahead_hits"]),
            f"{stall['count']}/{stall['sum']:.1f}s",
            f"{d['backend_errors']}/{d['backend_retries']}", d.get("backend_last_error") or "",
        ])
    for f in result.get("failed", []):
        rows.append([f["path"], "failed", "-", "-", "-", "-", "-", "-", f["error"]])
    if rows:
        print_table(rows, ["NAME", "STATE", "READ", "BLOCKS", "HIT", "RA-HITS", "STALLS",
                           "ERR/RETRY", "LAST ERROR"])
    else:
        click.echo("no datastores attached")


@click.command()
@click.argument("name")
@click.argument("path", required=False, default="")
@click.option("--version", "version", default=None)
@click.pass_obj
def refresh(obj: Context, name: str, path: str, version: str | None) -> None:
    """Drop cached metadata of a datastore (or one PATH in it)."""
    result = run_guarded(lambda: obj.call("refresh", name=name, version=version, path=path))
    click.echo(f"refreshed {result['refreshed']}")


@click.command()
@click.pass_obj
def ping(obj: Context) -> None:
    """Check that the daemon answers."""
    result = run_guarded(lambda: obj.call("ping"))
    click.echo(f"pong from pid {result['pid']}")


@click.command("link-home")
@click.option("--user", help="Link this user's home and give them the link (needs root).")
@click.option("--home", type=click.Path(path_type=Path, file_okay=False),
              help="Home directory to link in.")
@click.option("--target", type=click.Path(path_type=Path), default=Path("/datastores"),
              show_default=True)
@click.option("--force", is_flag=True, help="Replace a foreign symlink, empty dir or empty file.")
def link_home_cmd(user: str | None, home: Path | None, target: Path, force: bool) -> None:
    """Create HOME/datastores -> /datastores (works without the daemon)."""
    from dsmount.node import homelink

    if not user and not home:
        raise click.UsageError("give --user or --home")

    def link() -> None:
        nonlocal home
        owner = None
        if user:
            user_home, uid, gid = homelink.home_of(user)
            home, owner = home or user_home, (uid, gid)
        assert home is not None
        outcome = homelink.link_home(home, target, owner=owner, force=force)
        click.echo(f"{home / 'datastores'} -> {target}: {outcome.value}")

    run_guarded(link)


COMMANDS = [daemon, attach, detach, list_, status, refresh, ping, link_home_cmd]
