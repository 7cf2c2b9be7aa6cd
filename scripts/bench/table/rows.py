"""The comparison table's columns (systems) and rows (workloads), in table order.

Rows 1-11 read, 12-14 write (table/write_rows.py), 15-19 measure the cost of each file and
each GiB for every system (CPU from /proc over all the system's processes and threads, FUSE
requests by kind). A row's unit decides how its cells are shown (report.py).
"""

from __future__ import annotations

from scripts.bench.table import write_rows as wr

CLIENTS = (
    "sdk-sync", "sdk-aio", "adlfs", "rclone-off", "rclone-full", "rclone-writes", "dsmount",
    "local-disk", "fs-sdk-aio", "dsmount-fs",
)  # fmt: skip
DIRECT = ("sdk-sync", "sdk-aio", "adlfs")
RCLONE = ("rclone-off", "rclone-full")  # the read rows' rclone columns
RCLONE_WRITES = "rclone-writes"  # `--vfs-cache-mode writes`: the write rows (12-13) only
WRITERS = ("sdk-sync", "sdk-aio", RCLONE_WRITES, "dsmount")  # the clients with write rows
FILESHARE = ("fs-sdk-aio", "dsmount-fs")  # run against the Azure Files emulator, not Azurite

# Row key -> (label, unit). Order is the table's row order.
WORKLOADS: dict[str, tuple[str, str]] = {
    "seq_cold_mbps": ("1. cold sequential read, 1 blob", "MB/s"),
    "seq_warm_mbps": ("2. warm re-read, same blob", "MB/s"),
    "small_files_per_s": ("3. small files, 8 threads", "files/s"),
    "list_cold_s": ("4. list tiny dir, cold", "s"),
    "list_warm_s": ("4. list tiny dir, warm", "s"),
    "ver_list_cold_s": ("4. list tiny dir of the packed version, cold", "s"),
    "ver_list_warm_s": ("4. list tiny dir of the packed version, warm", "s"),
    "pread_per_s": ("5. random 64 KiB reads, 1 in flight", "reads/s"),
    "pread8_per_s": ("5. random 64 KiB reads, 8 in flight", "reads/s"),
    "pread_fetch_ratio": ("5. bytes fetched / bytes read, 1 in flight", "x"),
    "peak_rss_mib": ("6. daemon peak RSS, whole run", "MiB"),
    "stream_peak_rss_mib": ("6. peak RSS streaming 2 blobs", "MiB"),
    "shuffle_cold_per_s": ("7. shuffled small files, cold epoch, 8 threads", "files/s"),
    "shuffle_warm_per_s": ("7. shuffled small files, second epoch", "files/s"),
    "packed_cold_per_s": ("8. packed version, shuffled, cold epoch, 8 threads", "files/s"),
    "packed_warm_per_s": ("8. packed version, shuffled, second epoch", "files/s"),
    "seq_cpu_s_per_gib": ("9. CPU per GiB, cold sequential: all counted", "CPU-s"),
    "seq_proc_cpu_s_per_gib": ("9. CPU per GiB, cold sequential: client/daemon only", "CPU-s"),
    "req_small": ("10. backend requests per file: row 3", "req/file"),
    "req_shuffle_cold": ("10. backend requests per file: row 7 cold", "req/file"),
    "req_shuffle_warm": ("10. backend requests per file: row 7 second", "req/file"),
    "req_packed_cold": ("10. backend requests per file: row 8 cold", "req/file"),
    "req_packed_warm": ("10. backend requests per file: row 8 second", "req/file"),
    "req_loader_cold": ("10. backend requests per file: row 17", "req/file"),
    "req_disk_epoch": ("10. backend requests per file: row 18 (disk cache)", "req/file"),
    "million_attach_s": ("11. 1M-file version: attach + first ls", "s"),
    "million_find_s": ("11. 1M-file version: find | wc -l", "s"),
    "million_rss_mib": ("11. 1M-file version: daemon peak RSS", "MiB"),
    "million_lists": ("11. 1M-file version: LIST calls (at the proxy)", "calls"),
    **wr.WRITE_WORKLOADS,  # rows 12-14 (table/write_rows.py)
    "sha_cold_mbps": ("15. cold sha256sum of blob 1 (SDK: download and hash in order)", "MB/s"),
    "shuffle_cold_cpu_ms": ("16. CPU per file, row 7 cold (the system's processes)", "ms"),
    "packed_cold_cpu_ms": ("16. CPU per file, row 8 packed cold (the daemon)", "ms"),
    "loader_cold_per_s": ("17. loader epoch, cold: 4 processes, 1 file at a time, hashing",
                          "files/s"),
    "loader_cold_cpu_ms": ("17. CPU per file in the loader epoch (the system's processes)", "ms"),
    "disk_epoch_per_s": ("18. disk-cache epoch, page cache dropped, 8 threads, shuffled",
                         "files/s"),
    "disk_epoch_cpu_ms": ("18. CPU per file in the disk-cache epoch (the daemon)", "ms"),
    "fuse_shuffle_cold": ("19. FUSE requests per file by kind: row 7 cold", "by kind"),
    "fuse_packed_cold": ("19. FUSE requests per file by kind: row 8 cold", "by kind"),
    "fuse_loader_cold": ("19. FUSE requests per file by kind: row 17", "by kind"),
    "fuse_disk_epoch": ("19. FUSE requests per file by kind: row 18", "by kind"),
}
# Workloads whose backend requests are counted, per file done (row 10).
REQUEST_ROWS = {
    "small_files_per_s": "req_small",
    "shuffle_cold_per_s": "req_shuffle_cold",
    "shuffle_warm_per_s": "req_shuffle_warm",
    "packed_cold_per_s": "req_packed_cold",
    "packed_warm_per_s": "req_packed_warm",
    "loader_cold_per_s": "req_loader_cold",
}
DISK_EPOCH_KEYS = ("disk_epoch_per_s", "disk_epoch_cpu_ms", "fuse_disk_epoch", "req_disk_epoch")
MILLION_KEYS = ("million_attach_s", "million_find_s", "million_rss_mib", "million_lists")
