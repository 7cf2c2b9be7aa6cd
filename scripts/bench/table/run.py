"""Running one column of the comparison table: its read rows in one setup, then its
dedicated runs (dsmount's rows 6, 11 and 18), then its write rows.

Invariants:
- A failing client never stops the run: each cell catches its own error and shows
  "error: ..."; a client whose setup fails gets that error in every cell.
- Row 10 (backend requests per file) is taken around the row it counts, from the proxy when
  every system goes through it, else from the daemon's own counters (dsmount only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scripts.bench.harness.batch import Figure
from scripts.bench.harness.cleanup import log, short_error
from scripts.bench.table.client import Client, Context
from scripts.bench.table.dsmount import DsmountClient, DsmountFsClient
from scripts.bench.table.local import LocalDiskClient
from scripts.bench.table.mounts import (
    MountClient,
    RcloneClient,
    RcloneFullClient,
    RcloneWritesClient,
)
from scripts.bench.table.rows import (
    DISK_EPOCH_KEYS,
    MILLION_KEYS,
    RCLONE_WRITES,
    REQUEST_ROWS,
    WRITERS,
)
from scripts.bench.table.sdk import AdlfsClient, FsSdkAioClient, SdkAioClient, SdkSyncClient

CLIENT_CLASSES: dict[str, type[Client]] = {
    "sdk-sync": SdkSyncClient,
    "sdk-aio": SdkAioClient,
    "adlfs": AdlfsClient,
    "rclone-off": RcloneClient,
    "rclone-full": RcloneFullClient,
    RCLONE_WRITES: RcloneWritesClient,
    "dsmount": DsmountClient,
    "local-disk": LocalDiskClient,
    "fs-sdk-aio": FsSdkAioClient,
    "dsmount-fs": DsmountFsClient,
}


def counted_requests(client: Client) -> int | None:
    """`client.request_count()`, or None (logged) if counting fails: row 10 is then n/a."""
    try:
        return client.request_count()
    except Exception as exc:
        log(f"{client.name}: counting requests failed: {short_error(exc)}")
        return None


def run_million(client: Client, ctx: Context) -> bool:
    return (isinstance(client, DsmountClient) and client.measure_million
            and (ctx.million_version is not None or ctx.million_error is not None))  # fmt: skip


def dedicated_runs(client: Client, ctx: Context
                   ) -> list[tuple[str, tuple[str, ...], Callable[[], dict[str, Any]]]]:
    """(what, its cells, the run) for each dedicated run of `client`."""
    if not isinstance(client, DsmountClient):
        return []
    runs: list[tuple[str, tuple[str, ...], Callable[[], dict[str, Any]]]] = []
    if client.measure_stream_rss and not ctx.million_only:
        runs.append(("streaming run for peak RSS", ("stream_peak_rss_mib",),
                     lambda: {"stream_peak_rss_mib": client.stream_peak_rss()}))
    if client.measure_disk_epoch and not ctx.million_only:
        runs.append(("disk-cache epoch", DISK_EPOCH_KEYS, client.disk_epoch))
    if run_million(client, ctx):
        runs.append(("1M-file version", MILLION_KEYS, client.million_row))
    return runs


def run_dedicated(client: Client, ctx: Context, cells: dict[str, Any]) -> None:
    for what, keys, fn in dedicated_runs(client, ctx):
        log(f"{client.name}: dedicated daemon: {what}")
        try:
            got = fn()
            notes = got.pop("notes", {})
            cells.update(got)
            cells.setdefault("notes", {}).update(notes)
            log(f"{client.name}: " + ", ".join(f"{k} = {got[k]}" for k in keys if k in got))
        except Exception as exc:
            err = {"error": short_error(exc)}
            cells.update(dict.fromkeys(keys, err))
            log(f"{client.name}: {what} error: {err['error']}")


def run_client(name: str, ctx: Context) -> dict[str, Any]:
    """Run every workload of one client (read rows, then write rows); errors land in the
    cells, never escape."""
    client = CLIENT_CLASSES[name](ctx)
    cells = run_read_rows(client, ctx) if client.read_rows and not ctx.writes_only else {}
    if ctx.write is not None and name in WRITERS:
        log(f"{name}: write rows")
        try:
            cells.update(client.write_rows())
        except Exception as exc:  # write_rows catches per row; this is its own setup failing
            cells["write_rows_error"] = short_error(exc)
            log(f"{name}: write rows error: {cells['write_rows_error']}")
    return cells


def measured(client: Client, key: str, fn: Callable[[], float | Figure],
             cells: dict[str, Any]) -> None:
    """One row's cells (its figure, the extra cells it made, its request count per item)."""
    req_key = REQUEST_ROWS.get(key)
    before = counted_requests(client) if req_key else None
    try:
        fig = fn()
        if isinstance(fig, Figure):
            cells[key] = fig.value
            cells.update(fig.extra)
            if fig.note:
                cells.setdefault("notes", {})[key] = fig.note
            if req_key and before is not None and fig.count:
                after = counted_requests(client)
                if after is not None:
                    cells[req_key] = (after - before) / fig.count
        else:
            cells[key] = fig
        log(f"{client.name}: {key} = {cells[key]:.3f}")
    except Exception as exc:
        cells[key] = {"error": short_error(exc)}
        log(f"{client.name}: {key} error: {cells[key]['error']}")


def run_read_rows(client: Client, ctx: Context) -> dict[str, Any]:
    """The read rows of one client, then its dedicated runs."""
    cells: dict[str, Any] = {}
    if ctx.million_only:
        run_dedicated(client, ctx, cells)
        return cells
    log(f"{client.name}: setup")
    try:
        client.setup()
    except Exception as exc:
        err = {"error": "setup: " + short_error(exc)}
        log(f"{client.name}: {err['error']}")
        client_teardown(client, cells)
        keys = [k for k, _ in client.workloads()]
        if isinstance(client, MountClient) and client.measures_rss:
            keys.append("peak_rss_mib")
        for _, run_keys, _ in dedicated_runs(client, ctx):
            keys += run_keys
        return dict.fromkeys(keys, err)
    try:
        for key, fn in client.workloads():
            measured(client, key, fn, cells)
        if isinstance(client, MountClient) and client.measures_rss:
            try:
                cells["peak_rss_mib"] = client.peak_rss_mib()
            except Exception as exc:
                cells["peak_rss_mib"] = {"error": short_error(exc)}
        try:
            cells.update(client.extra_info())
        except Exception as exc:
            cells["extra_info_error"] = short_error(exc)
    finally:
        client_teardown(client, cells)
    run_dedicated(client, ctx, cells)
    return cells


def client_teardown(client: Client, cells: dict[str, Any]) -> None:
    try:
        client.teardown()
    except Exception as exc:
        cells["teardown_error"] = short_error(exc)
        log(f"{client.name}: teardown error: {cells['teardown_error']}")
