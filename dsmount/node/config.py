"""Typed daemon configuration: TOML file, then environment, then command-line flags.

Every field has a default that works on a compute node; `load_config` validates types and
ranges and raises ConfigError naming the file and key, so a bad config never starts a
half-configured daemon.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dsmount.control.protocol import DEFAULT_SOCKET, AttachRequest
from dsmount.errors import ConfigError, DsmountError
from dsmount.shared.secretref import check_private
from dsmount.shared.sizes import format_size, parse_size

DEFAULT_CONFIG_PATH = Path("/etc/dsmount/dsmount.toml")

@dataclass(frozen=True)
class DaemonSection:
    #: Where the tree appears. `/datastores` is the path Grid and Azure ML users know; the
    #: Jupyter link (`~/datastores`) and the unit's ExecStopPost= point at it.
    mountpoint: str = "/datastores"
    #: The control socket. Under /run/dsmount, which the unit creates (RuntimeDirectory=) and the
    #: kernel empties at boot, so a stale socket never outlives a reboot.
    socket: str = DEFAULT_SOCKET
    #: A group whose members may use the socket besides root and the daemon's user. Empty by
    #: default: attaching makes the (root) daemon read on someone's behalf, so it is opt-in.
    socket_group: str = ""
    #: Whether a socket-group member may attach with --shared (every user then reads it, as
    #: far as the source's own modes allow). On: sharing a dataset on a node is the common
    #: need, and a local directory is shared only if every user can reach it anyway. Off:
    #: every user-attached datastore stays private to its owner.
    allow_shared: bool = True
    #: Where attached datastores are persisted for a restart; /var/lib/dsmount is the unit's
    #: StateDirectory= (kept across reboots, 0700).
    state_dir: str = "/var/lib/dsmount"
    #: info logs attach/detach and failures once each (rate-limited): quiet enough for a journal
    #: on every node, enough to see an outage. debug logs every retry.
    log_level: str = "info"


@dataclass(frozen=True)
class FsSection:
    #: Owner shown for the mount's own directories and for every file of a cloud datastore
    #: (blob, file share: they have no owners of their own): root, so the modes below decide
    #: who reads, and only the owner writes into a read-write datastore. Local datastores show
    #: their source's owners and modes instead.
    uid: int = 0
    gid: int = 0
    #: World-readable, not writable: shared training data, read by every job on the node. A
    #: datastore attached --read-write adds the owner's write bit (the owner is uid/gid).
    file_mode: int = 0o444
    dir_mode: int = 0o555
    #: How FUSE requests reach the daemon. "direct": dsmount speaks the kernel protocol on
    #: /dev/fuse itself (node/fuse_direct.py), with no libfuse thread or pyfuse3 shim between a
    #: request and its handler, and it is the only way to passthrough (below). "pyfuse3":
    #: libfuse through pyfuse3, kept for kernels or setups where the direct session misbehaves.
    transport: str = "direct"
    #: With the direct transport, as root, on a kernel with FUSE passthrough (>= 6.9): a file
    #: whose bytes are complete and verified in the disk cache is opened with its cache file
    #: as the kernel's backing file, so readers read it on their own cores and no READ reaches
    #: the daemon. Off: every read goes through the daemon.
    passthrough: bool = True


@dataclass(frozen=True)
class CacheSection:
    #: ONE budget for every cached and in-flight block across all datastores. 0 (unset): the
    #: smaller of 1 GiB and a quarter of the daemon's memory limit (its cgroup's memory.max, else
    #: physical memory; node/memory_limit.py). 1 GiB holds the read-ahead of 8 concurrent
    #: sequential readers (128 MiB each) and leaves a training job's node memory alone; a
    #: quarter keeps a small container's daemon clear of its OOM killer.
    memory_budget: int = 0
    #: The unit of a sequential GET and of caching. 8 MiB amortises a GET's latency (5-30 ms on
    #: Blob storage) over enough bytes to reach full bandwidth, and is Azure's sweet spot for
    #: ranged reads; small files are fetched whole, not padded to it.
    block_size: int = 8 * 1024**2
    #: A second-level cache on local disk, off by default: not every node has a disk to spare.
    disk_dir: str = ""
    #: Bytes the disk cache may hold: 10 GiB fits a typical fine-tuning set on a node's SSD.
    disk_budget: int = 10 * 1024**3
    #: GETs in flight across all readers: 16 saturated Azurite and Blob storage from a 2-core
    #: node (measured); more only adds contention and memory held in flight.
    max_concurrent_gets: int = 16
    #: A sequential reader's read-ahead window cap: 16 blocks of 8 MiB, what one stream needs to
    #: reach the storage's bandwidth (measured: doubling beyond it gained nothing).
    readahead_max: int = 128 * 1024**2


@dataclass(frozen=True)
class PrefetchSection:
    #: Bytes fetched ahead of readers along hints and directory order, all readers together
    #: (at most half the memory budget): 256 MiB is 2,600 files of 100 KiB, far more than 16
    #: GETs in flight need behind 30 ms, and small beside a 1 GiB budget.
    window_bytes: int = 256 * 1024**2
    #: Files fetched ahead of one reader at most: 64 keep 16 GETs busy while a reader with 4
    #: workers consumes, and bound what a wrong guess costs.
    window_files: int = 64
    #: Seconds a hint lives without progress (no file of it opened) or renewal: a job that
    #: stopped reading must not hold the window; a minute outlasts a slow first batch.
    idle_timeout: float = 60.0
    #: Guess directory order (tar, cp -r, rsync, an unshuffled loader) and fetch ahead along it.
    dir_order: bool = True
    #: GETs of files fetched ahead in flight at most (besides [cache] max_concurrent_gets): a
    #: 100 KiB file is one request's latency, so its rate is in-flight / latency; measured
    #: behind 20 ms, 4 readers of a hinted epoch: 16 gave ~300-390 files/s, 64 ~570.
    gets_in_flight: int = 64


@dataclass(frozen=True)
class MetadataSection:
    #: Seconds attributes and listings are trusted: 60 s makes an epoch's lookups free while a
    #: file replaced by another tool shows within a minute (`dsmount refresh` at once).
    ttl: float = 60.0
    #: Seconds a "does not exist" is trusted: short, because a job waiting for a file to
    #: appear (a marker, a checkpoint) should see it soon.
    negative_ttl: float = 5.0


@dataclass(frozen=True)
class RetrySection:
    #: After this a FUSE request gets EIO: long enough to ride out a storage blip or throttling,
    #: short enough that a reader is never stuck (the kernel has no timeout of its own).
    request_deadline: float = 60.0
    #: One attempt: an 8 MiB GET takes well under a second; 30 s only trips on a stalled
    #: connection, which is then abandoned and retried.
    attempt_timeout: float = 30.0
    #: Attempts for transient failures, with jittered exponential backoff from 0.1 s: six cover
    #: a few seconds of outage, and the deadline bounds the total anyway.
    max_attempts: int = 6


@dataclass(frozen=True)
class MetricsSection:
    #: HOST:PORT to serve Prometheus metrics on (`/metrics`). Off unless set: an open port is
    #: an operator's decision. 127.0.0.1:9464 for a node-local scraper (9464 is the port the
    #: OpenTelemetry Prometheus exporter made common); 0.0.0.0:9464 in a Kubernetes pod.
    address: str = ""


@dataclass(frozen=True)
class WritesSection:
    #: Off by default: a mount that can take writes is mounted without the kernel's `ro`, and
    #: measured here that costs cold sequential reads about a third (0.86x -> 0.51x of the
    #: direct asyncio SDK on 2 cores); nodes that write outputs turn it on.
    enabled: bool = False
    #: Where writes are staged on local disk: random writes, updates, and the shadow copy of
    #: a sequential writer. Empty: `staging/` below [cache] disk_dir if set (the node's scratch
    #: disk), else below [daemon] state_dir. Holds a journal of temporary objects, so a daemon
    #: that was killed cleans up after itself at the next start.
    staging_dir: str = ""
    #: Disk bytes all staged writes may use together; beyond it a write that needs the disk
    #: gets ENOSPC (a sequential one keeps streaming without its shadow copy).
    staging_budget: int = 10 * 1024**3
    #: One staged part (a Put Block): 8 MiB, like a read block, reaches full bandwidth per
    #: request and keeps the 50,000-block limit of a blob at 390 GiB.
    part_size: int = 8 * 1024**2
    #: Parts of one file uploading at once: 4 keep the link busy while the writer fills the
    #: next; every buffer comes out of [cache] memory_budget.
    parts_in_flight: int = 4
    #: Files open for writing at once: beyond it open() fails with ENFILE, so many writers
    #: share the memory budget instead of each waiting on a sliver of it.
    max_open_files: int = 64
    #: Objects a blob directory rename moves one by one (copy + delete); beyond it EXDEV.
    dir_rename_limit: int = 1000
    #: Keep a disk copy of sequential writes so a writer that seeks back (zip, HDF5) works.
    shadow: bool = True


@dataclass(frozen=True)
class Config:
    daemon: DaemonSection = field(default_factory=DaemonSection)
    fs: FsSection = field(default_factory=FsSection)
    cache: CacheSection = field(default_factory=CacheSection)
    metadata: MetadataSection = field(default_factory=MetadataSection)
    retry: RetrySection = field(default_factory=RetrySection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    writes: WritesSection = field(default_factory=WritesSection)
    prefetch: PrefetchSection = field(default_factory=PrefetchSection)
    datastores: tuple[dict[str, Any], ...] = ()
    source: str | None = None  # the file it came from, for messages


_SECTIONS: dict[str, type] = {
    "daemon": DaemonSection,
    "fs": FsSection,
    "cache": CacheSection,
    "metadata": MetadataSection,
    "retry": RetrySection,
    "metrics": MetricsSection,
    "writes": WritesSection,
    "prefetch": PrefetchSection,
}
_SIZE_KEYS = {"memory_budget", "block_size", "disk_budget", "readahead_max", "staging_budget",
              "part_size", "window_bytes"}
_MODE_KEYS = {"file_mode", "dir_mode"}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"[{section}] {key}"
    try:
        if key in _SIZE_KEYS:
            return parse_size(value)
        if key in _MODE_KEYS:
            mode = int(value, 8) if isinstance(value, str) else int(value)
            if not 0 <= mode <= 0o7777:
                raise ValueError("mode out of range")
            return mode
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("expected an integer")
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("expected a number")
            if value < 0:
                raise ValueError("must not be negative")
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
    except ValueError as e:
        raise ConfigError(f"{where}: {e} (got {value!r})") from None
    return value


def _section(name: str, raw: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(unknown)}")
    defaults = cls()
    values = {k: _coerce(name, k, v, getattr(defaults, k)) for k, v in raw.items()}
    return cls(**values)


def _validate(cfg: Config) -> Config:
    c = cfg.cache
    if c.block_size < 64 * 1024 or c.block_size > 256 * 1024**2:
        raise ConfigError("[cache] block_size must be between 64KiB and 256MiB")
    if c.memory_budget and c.memory_budget < 4 * c.block_size:
        raise ConfigError(
            "[cache] memory_budget must hold at least 4 blocks "
            f"({format_size(4 * c.block_size)} with block_size {format_size(c.block_size)})"
        )
    if c.max_concurrent_gets < 1:
        raise ConfigError("[cache] max_concurrent_gets must be at least 1")
    if cfg.daemon.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError("[daemon] log_level must be debug, info, warning or error")
    if cfg.fs.transport not in ("pyfuse3", "direct"):
        raise ConfigError(f"[fs] transport must be pyfuse3 or direct (got {cfg.fs.transport!r})")
    if cfg.retry.max_attempts < 1:
        raise ConfigError("[retry] max_attempts must be at least 1")
    if cfg.metrics.address:
        parse_address(cfg.metrics.address)
    if (cfg.prefetch.window_files < 1 or cfg.prefetch.idle_timeout <= 0
            or cfg.prefetch.gets_in_flight < 1):
        raise ConfigError("[prefetch] window_files and gets_in_flight must be at least 1 and "
                          "idle_timeout > 0")
    w = cfg.writes
    if w.part_size < 64 * 1024 or w.part_size > 256 * 1024**2:
        raise ConfigError("[writes] part_size must be between 64KiB and 256MiB")
    if w.parts_in_flight < 1 or w.max_open_files < 1:
        raise ConfigError("[writes] parts_in_flight and max_open_files must be at least 1")
    return cfg


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" ("[::1]:9464" for IPv6; port 0: any free one, shown by
    `status`); ConfigError if malformed."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"[metrics] address must be HOST:PORT, e.g. 127.0.0.1:9464 "
                          f"(got {address!r})")
    return host, int(port)


def parse_config(data: dict[str, Any], source: str | None = None) -> Config:
    """A Config from already-parsed TOML data."""
    unknown = sorted(set(data) - set(_SECTIONS) - {"datastore"})
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(unknown)}")
    sections = {name: _section(name, data[name]) for name in _SECTIONS if name in data}
    stores = data.get("datastore", [])
    if not isinstance(stores, list) or not all(isinstance(d, dict) for d in stores):
        raise ConfigError("[[datastore]] entries must be tables")
    for d in stores:
        if "name" not in d or "kind" not in d:
            raise ConfigError("every [[datastore]] needs a name and a kind")
        # The same validation an attach request gets, now rather than at start-up; the auth
        # table holds a secret *reference* (env/file), resolved only when attaching.
        try:
            AttachRequest.from_args({k: v for k, v in d.items() if k != "auth"})
        except DsmountError as e:
            raise ConfigError(f"[[datastore]] {d.get('name')!r}: {e}") from None
    return _validate(Config(**sections, datastores=tuple(stores), source=source))


_INLINE_SECRET_KEYS = ("secret", "key", "account_key", "sas_token", "connection_string")


def _inline_secrets(datastores: tuple[dict[str, Any], ...]) -> bool:
    """Whether any [[datastore]] carries a secret in the file itself (not an env/file ref)."""
    for entry in datastores:
        for table in (entry, entry.get("auth")):
            if isinstance(table, dict) and any(table.get(k) for k in _INLINE_SECRET_KEYS):
                return True
    return False


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
                ) -> Config:
    """Load the config: the file (explicit path, else $DSMOUNT_CONFIG, else the default path if
    it exists), then `overrides` ({section: {key: value}}) from command-line flags."""
    explicit = path or os.environ.get("DSMOUNT_CONFIG")
    file = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    source = None
    if file.exists():
        try:
            with file.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file}: not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"{file}: cannot read: {e.strerror}") from None
        source = str(file)
    elif explicit:
        raise ConfigError(f"{file}: config file not found")
    try:
        cfg = parse_config(data, source)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None
    if source is not None and _inline_secrets(cfg.datastores):
        # Like ssh with a private key: a file holding a secret others can read is refused.
        check_private(source)
    for section, values in (overrides or {}).items():
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            continue
        current = getattr(cfg, section)
        defaults = type(current)()
        coerced = {k: _coerce(section, k, v, getattr(defaults, k)) for k, v in values.items()}
        cfg = replace(cfg, **{section: replace(current, **coerced)})
    return _validate(cfg)
