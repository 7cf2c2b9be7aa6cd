"""How the comparison table's rows were measured, written under the table for its reader."""

from __future__ import annotations

from scripts.bench.table.client import Context, Results
from scripts.bench.table.dataset import MIL_FILES, MIL_PACKS, MIL_SIZE, SHUF_DATASTORE, KiB


def method_notes(ctx: Context, results: Results) -> list[str]:
    """How the new rows were measured, for the reader of the table."""
    notes = []
    if any(c in results for c in ("dsmount", "dsmount-fs")):
        notes.append(f"dsmount daemons run with --cache-budget {ctx.cache_budget}")
    if ctx.writes_only:  # the read rows' notes below describe rows that did not run
        return notes + write_notes(ctx)
    notes += [
        "row 9: CPU-seconds (user + system from /proc, every thread and child process) per GiB "
        "over the timed cold sequential read; 'all counted': direct clients = this benchmark "
        "process (the client runs in it), rclone = the rclone process serving the data "
        "container + the `dd` reading the mount, dsmount = the daemon + `dd`; 'client/daemon "
        "only' leaves `dd` out",
        "rows 15-19 (docs/benchmarks.md says how each is made): 15 = `sha256sum` through the "
        "mount vs sdk-aio downloading and hashing in order; 16-18 CPU per file = the system's "
        "processes only (the daemon, rclone, or this process for a direct client), not the "
        "reading threads of a mount's epoch; 17 = 4 spawned worker processes, one file at a "
        "time, hashing; 18 = a dedicated daemon's disk cache (filled by `dsmount warm`, read "
        "through a second attachment, page cache dropped) beside local-disk (the same files in "
        "a plain directory, the same threads and order); 19 = differences of `status`'s "
        "fuse_requests per file",
        "rows 7-8: the same two seeded shuffles of the small files for every system, 8 "
        "threads; cold = page cache dropped first, the second epoch is the other shuffle with "
        "nothing dropped; dsmount's row 7 reads a second attachment of the data container "
        f"({SHUF_DATASTORE}: its own cache keys) so it is as cold as everyone's; adlfs and "
        "rclone-full (its disk cache holds the files since row 3) do not run row 7",
    ]
    if ctx.proxied:
        notes.append("row 10: requests forwarded to the stores, counted at the fault proxy, "
                     "per file read (every system alike)")  # fmt: skip
    else:
        notes.append("row 10: the daemon's own backend_requests counters (`status`), dsmount "
                     "only: without --latency no proxy counts the other systems")  # fmt: skip
    return version_notes(ctx, notes) + write_notes(ctx)


def write_notes(ctx: Context) -> list[str]:
    notes = []
    if ctx.write is not None:
        notes.append(
            "rows 12-14: an Azurite of their own, every system into an empty container; the "
            "source in /dev/shm; 'until durable' = until a check of the store (started once "
            "the mount reports nothing pending: rclone's rc vfs/stats; dsmount commits at "
            "close) finds every object whole; every object is then read back with the SDK and "
            "compared with its source; rclone-writes runs --vfs-write-back 0s, --transfers 4; "
            "dsmount's write rows run in dedicated daemons with [writes] enabled (row 14 in a "
            "fresh one, so its VmHWM is that row's peak)"
        )
    return notes


def version_notes(ctx: Context, notes: list[str]) -> list[str]:
    if ctx.packed_error and ctx.registry_dir is not None:
        notes.append(f"no packed version: {ctx.packed_error}")
    if ctx.million_version is not None or ctx.million_error is not None:
        notes.append(
            f"row 11: {ctx.million_dirs:,} dirs x {MIL_FILES:,} files of {MIL_SIZE // KiB} KiB in "
            f"{MIL_PACKS} packs, a dedicated daemon behind the fault proxy; attach = resolving "
            "the version in this process (what `dsmount attach NAME --version N` does before "
            "it calls the daemon) + the daemon's attach + listing the root; LIST calls are "
            "those the proxy forwarded from the daemon's attach to the end of `find`; RSS is "
            "that daemon's peak over its whole life"
        )
    return notes
