"""The goals dsmount is measured against, all in one place: each is a ratio to another
system's figure in the same run (or an absolute limit), reported with what it was measured
against and whether it is met.

Groups: "reads" (the read rows' goals), "earlier" (older read goals still in force),
"writes" (rows 12-14), "file share" (reported, no goal yet) and "cost" (CPU per file and per
GiB, the disk-cache epoch, the loader epoch: rows 15-18).

Invariants:
- A missing figure (a row that did not run or failed) is reported "n/a", never as met.
- A goal is compared with the BEST of the systems named (the strictest reading).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scripts.bench.table.rows import DIRECT, FILESHARE, RCLONE, RCLONE_WRITES, WRITERS
from scripts.bench.table.write_rows import WRITE_WORKLOADS

KiB, MiB, MB = 1 << 10, 1 << 20, 1_000_000
Results = dict[str, dict[str, Any]]

def value(results: Results, client: str, key: str) -> float | None:
    v = results.get(client, {}).get(key)
    return v if isinstance(v, int | float) else None


def best(results: Results, clients: tuple[str, ...], key: str, lower: bool = False):
    vals = [(value(results, c, key), c) for c in clients]
    vals = [(v, c) for v, c in vals if v is not None]
    if not vals:
        return None, None
    return (min if lower else max)(vals)


@dataclass
class Ratio:
    label: str
    measured: float | None
    target: str
    met: bool | None
    detail: str
    group: str = "reads"  # which set of goals it belongs to (see the module docstring)


RSS_400MB_MIB = 400 * MB / MiB  # the 1M-file version's RSS goal is stated in MB


def ratios(results: Results, budget_mib: float, reads: bool = True) -> list[Ratio]:
    out: list[Ratio] = []
    dsm = "dsmount"

    def rel(
        label: str,
        key: str,
        others: tuple[str, ...],
        op: str,
        target: float | None,
        lower: bool,
        me: str = dsm,
        other_key: str | None = None,
        group: str = "reads",
    ) -> None:
        """Ratio of `me`'s `key` to the best of `others`' `other_key` (default: `key`);
        `target` None: reported, no target."""
        goal = "reported" if target is None else f"{op} {target}x"
        mine = value(results, me, key)
        other, who = best(results, others, other_key or key, lower=lower)
        if mine is None or other is None or other == 0:
            out.append(Ratio(label, None, goal, None, "missing figure", group))
            return
        r = mine / other
        met = None if target is None else (r >= target if op == ">=" else r <= target)
        out.append(Ratio(label, r, goal, met, f"{mine:.3f} vs {who} {other:.3f}", group))

    def absolute(label: str, key: str, limit: float, unit: str, group: str = "reads") -> None:
        mine = value(results, dsm, key)
        goal = f"<= {limit:g} {unit}"
        if mine is None:
            out.append(Ratio(label, None, goal, None, "missing figure", group))
        else:
            out.append(Ratio(label, mine, goal, mine <= limit, f"{unit}", group))

    # A file-share-only run has no blob figures; a --writes-only run has no read figures.
    if reads and any(c not in FILESHARE for c in results):
        direct, off = DIRECT, ("rclone-off",)
        rel("small files vs best direct SDK", "small_files_per_s", direct, ">=", 1.0, False)
        rel("small files vs rclone-off", "small_files_per_s", off, ">=", 1.5, False)
        rel("packed shuffled cold epoch vs rclone-off shuffled", "packed_cold_per_s", off,
            ">=", 5.0, False, other_key="shuffle_cold_per_s")  # fmt: skip
        rel("packed shuffled cold epoch vs best direct per-file GETs", "packed_cold_per_s",
            direct, ">=", 3.0, False, other_key="shuffle_cold_per_s")  # fmt: skip
        rel("packed second epoch vs rclone-off second epoch", "packed_warm_per_s", off, "",
            None, False, other_key="shuffle_warm_per_s")  # fmt: skip
        rel("unpacked shuffled cold epoch vs rclone-off", "shuffle_cold_per_s", off, "", None,
            False)  # fmt: skip
        rel("random 64 KiB preads vs best direct ranged GET (1 in flight)", "pread_per_s",
            direct, ">=", 1.0, False)  # fmt: skip
        absolute("random 64 KiB preads: bytes fetched / bytes read", "pread_fetch_ratio", 2.0,
                 "x")  # fmt: skip
        rel("listing a version cold: time vs best rclone (plain container)", "ver_list_cold_s",
            RCLONE, "<=", 0.1, True, other_key="list_cold_s")  # fmt: skip
        rel("listing a plain container cold: time vs best rclone", "list_cold_s", RCLONE, "<=",
            0.75, True)  # fmt: skip
        absolute("listing warm, plain container", "list_warm_s", 0.05, "s")
        absolute("listing warm, version", "ver_list_warm_s", 0.05, "s")
        absolute("1M-file version: attach + first ls", "million_attach_s", 3.0, "s")
        absolute("1M-file version: find | wc -l", "million_find_s", 60.0, "s")
        absolute("1M-file version: daemon peak RSS (400 MB)", "million_rss_mib",
                 round(RSS_400MB_MIB, 1), "MiB")  # fmt: skip
        absolute("1M-file version: LIST calls", "million_lists", 0, "calls")
        rel("cold sequential vs direct asyncio SDK", "seq_cold_mbps", ("sdk-aio",), ">=", 1.0,
            False)  # fmt: skip
        rel("daemon CPU per GiB vs the direct asyncio SDK's", "seq_proc_cpu_s_per_gib",
            ("sdk-aio",), "<=", 1.5, True)  # fmt: skip
        absolute("peak RSS streaming 2 blobs (budget + 100 MiB)", "stream_peak_rss_mib",
                 budget_mib + 100, "MiB")  # fmt: skip
        absolute("daemon peak RSS, whole run (budget + 100 MiB)", "peak_rss_mib",
                 budget_mib + 100, "MiB")  # fmt: skip
        early = "earlier"
        rel("cold sequential vs best direct", "seq_cold_mbps", direct, ">=", 1.0, False,
            group=early)  # fmt: skip
        rel("cold sequential vs rclone-off", "seq_cold_mbps", off, ">=", 2.0, False,
            group=early)  # fmt: skip
        rel("warm re-read vs rclone-full warm", "seq_warm_mbps", ("rclone-full",), ">=", 10.0,
            False, group=early)  # fmt: skip
        rel("small files vs best rclone", "small_files_per_s", RCLONE, ">=", 2.0, False,
            group=early)  # fmt: skip
        rel("random 64 KiB preads vs rclone-off", "pread_per_s", off, ">=", 3.0, False,
            group=early)  # fmt: skip
    if reads and any(c not in FILESHARE for c in results):
        cost_targets(rel, absolute)
    if any(value(results, c, k) is not None for c in WRITERS for k in WRITE_WORKLOADS):
        # Durable in the store is the fair clock (rclone uploads after close);
        # the close-returns ratios are reported beside it.
        i13, rw, sdks = "writes", (RCLONE_WRITES,), ("sdk-sync", "sdk-aio")
        rel("sequential write vs best direct SDK upload_blob(max_concurrency=8)", "wseq_mbps",
            sdks, ">=", 0.8, False, group=i13)  # fmt: skip
        rel("sequential write vs rclone writes-mode, both until durable", "wseq_mbps", rw,
            ">=", 1.5, False, group=i13)  # fmt: skip
        rel("sequential write vs rclone writes-mode, until close returns", "wseq_close_mbps",
            rw, "", None, False, group=i13)  # fmt: skip
        rel("tar x vs rclone writes-mode, both until durable", "wtar_per_s", rw, ">=", 1.5,
            False, group=i13)  # fmt: skip
        rel("tar x vs rclone writes-mode, until tar exits", "wtar_close_per_s", rw, "", None,
            False, group=i13)  # fmt: skip
        rel("tar x vs the SDK uploading the same files, 8 threads", "wtar_per_s",
            ("sdk-sync",), "", None, False, group=i13)  # fmt: skip
        absolute("parallel writers: daemon peak RSS (budget + 100 MiB; every sha256 checked)",
                 "w16_rss_mib", budget_mib + 100, "MiB", group=i13)  # fmt: skip
    if any(c in FILESHARE for c in results):
        # The file share is reported as a ratio against the direct SDK on the same emulator;
        # no goal is set for it yet.
        for label, key, lower in (
            ("cold sequential", "seq_cold_mbps", False),
            ("small files", "small_files_per_s", False),
            ("listing cold: time", "list_cold_s", True),
            ("random 64 KiB reads, 1 in flight", "pread_per_s", False),
            ("random 64 KiB reads, 8 in flight", "pread8_per_s", False),
        ):
            rel(f"dsmount-fs vs fs-sdk-aio, {label}", key, ("fs-sdk-aio",), "",
                None, lower, me="dsmount-fs", group="file share")  # fmt: skip
    return out


def cost_targets(rel: Any, absolute: Any) -> None:
    """What a file and a GiB cost each system (rows 9 and 15-18): the daemon's CPU from /proc
    over all its processes and threads, and the rates those costs allow."""
    c = "cost"
    rel("disk-cache epoch vs the same files on local disk", "disk_epoch_per_s",
        ("local-disk",), ">=", 0.5, False, group=c)
    absolute("daemon CPU per file, disk-cache epoch", "disk_epoch_cpu_ms", 0.25, "ms", group=c)
    absolute("daemon CPU per cold unpacked 100 KiB file (row 7)", "shuffle_cold_cpu_ms", 0.8,
             "ms", group=c)
    rel("CPU per cold unpacked file vs rclone-off's", "shuffle_cold_cpu_ms", ("rclone-off",),
        "", None, True, group=c)
    rel("CPU per cold unpacked file vs the best direct SDK's", "shuffle_cold_cpu_ms",
        ("sdk-sync", "sdk-aio"), "", None, True, group=c)
    absolute("daemon CPU per cold packed file (row 8)", "packed_cold_cpu_ms", 0.3, "ms",
             group=c)
    absolute("daemon CPU per GiB streamed cold", "seq_proc_cpu_s_per_gib", 0.6, "s", group=c)
    rel("cold sequential vs direct asyncio SDK", "seq_cold_mbps", ("sdk-aio",), ">=", 1.2,
        False, group=c)
    rel("cold sha256sum through the mount vs the asyncio SDK downloading and hashing",
        "sha_cold_mbps", ("sdk-aio",), ">=", 1.0, False, group=c)
    rel("loader epoch (4 processes, hashing) vs rclone-off", "loader_cold_per_s",
        ("rclone-off",), ">=", 1.25, False, group=c)
    rel("CPU per file in the loader epoch vs rclone-off's", "loader_cold_cpu_ms",
        ("rclone-off",), "", None, True, group=c)
