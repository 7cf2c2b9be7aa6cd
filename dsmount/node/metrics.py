"""Prometheus metrics: the figures of `dsmount status --json`, translated at scrape time.

The daemon keeps plain counters and histograms (`node.cache.blocks.ReadCounters`,
`storage.retry.BackendStats`, `shared.histogram.Histogram`); nothing on the read path knows
about Prometheus. A scrape builds the status snapshot (the very dict `status --json` prints)
on the trio thread and `StatusCollector` turns it into metric families, so the two can never
disagree and metrics on costs the read path nothing.

`MetricsServer` is a small HTTP endpoint on the daemon's own trio loop (`GET /metrics`, with
OpenMetrics by content negotiation): no thread reads state the loop is changing.

Invariants:
- No secret and no error text is exported: labels are datastore keys (NAME or NAME/VERSION),
  operations, outcomes (error codes) and kinds.
- A failing scrape ends only its own connection; bind failures at start are a ConfigError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import trio
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from dsmount.errors import ConfigError

log = logging.getLogger(__name__)

Snapshot = Callable[[], dict[str, Any]]

# (metric name without dsmount_ and _total, status key, help): per-datastore counters.
_COUNTERS = (
    ("read_bytes", "bytes_read", "Bytes returned to FUSE reads."),
    ("reads", "reads", "FUSE read requests."),
    ("cache_hits", "cache_hits", "Block lookups served from memory."),
    ("cache_misses", "cache_misses", "Block lookups that had to fetch (disk cache or backend)."),
    ("fetched_bytes", "bytes_fetched", "Bytes fetched into the memory cache."),
    ("readahead_bytes", "readahead_bytes", "Bytes of read-ahead blocks started."),
    ("readahead_unread_bytes", "readahead_unread_bytes",
     "Read-ahead bytes evicted before anyone read them (waste)."),
    ("readahead_hits", "readahead_hits", "Read-ahead blocks a reader then used."),
    ("readahead_skipped", "readahead_skipped", "Read-ahead skipped for want of budget."),
    ("fetch_errors", "fetch_errors", "Block fetches that failed after retries."),
    ("passthrough_opens", "passthrough_opens",
     "Files opened with their disk-cache file as backing file (the kernel reads them)."),
    ("passthrough_bytes", "passthrough_bytes", "Sizes of the files opened by passthrough."),
    ("backend_retries", "backend_retries", "Backend attempts retried after a transient error."),
    ("backend_errors", "backend_errors", "Backend attempts that failed."),
    ("backend_received_bytes", "backend_bytes_fetched", "Bytes received from the backend."),
)


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: dict[str, Any]) -> None:
    buckets = [(b if isinstance(b, str) else floatToGoString(b), float(n))
               for b, n in h["buckets"]]
    family.add_metric(labels, buckets, sum_value=float(h["sum"]))


class StatusCollector:
    """A prometheus_client collector over a status snapshot (see the module docstring)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        status = self.snapshot()
        yield from self._daemon(status)
        yield from self._datastores(status.get("datastores", []))

    def _daemon(self, s: dict[str, Any]) -> Iterator[Metric]:
        cache = s.get("cache", {})
        used = GaugeMetricFamily("dsmount_cache_bytes",
                                 "Bytes held by the memory cache (budget shared by all "
                                 "datastores), cached or reserved by fetches in flight.",
                                 labels=["state"])
        used.add_metric(["cached"], cache.get("cached_bytes", 0))
        used.add_metric(["in_flight"], cache.get("in_flight_bytes", 0))
        yield used
        yield GaugeMetricFamily("dsmount_cache_budget_bytes", "The memory cache's byte budget.",
                                value=cache.get("budget_bytes", 0))
        yield GaugeMetricFamily("dsmount_cache_peak_bytes", "Highest cached + in-flight bytes.",
                                value=cache.get("peak_bytes", 0))
        yield GaugeMetricFamily("dsmount_cache_blocks", "Blocks in the memory cache.",
                                value=cache.get("blocks", 0))
        memory = s.get("memory")
        if memory:
            limit = GaugeMetricFamily("dsmount_memory_limit_bytes",
                                      "The memory limit the default budget came from.",
                                      labels=["source"])
            limit.add_metric([memory["limit_source"]], memory["limit_bytes"])
            yield limit
        disk = s.get("disk_cache")
        if disk:
            yield GaugeMetricFamily("dsmount_disk_cache_bytes", "Bytes in the disk cache.",
                                    value=disk.get("used_bytes", 0))
            yield GaugeMetricFamily("dsmount_disk_cache_budget_bytes", "The disk cache budget.",
                                    value=disk.get("budget_bytes", 0))
            for key, name in (("hits", "hits"), ("misses", "misses")):
                yield CounterMetricFamily(f"dsmount_disk_cache_{name}",
                                          f"Disk cache {name}.", value=disk.get(key, 0))
        fuse = CounterMetricFamily("dsmount_fuse_requests", "FUSE requests answered, by kind.",
                                   labels=["op"])
        for op, n in sorted(s.get("fuse_requests", {}).items()):
            fuse.add_metric([op], n)
        yield fuse
        yield GaugeMetricFamily("dsmount_uptime_seconds", "Seconds since the daemon started.",
                                value=s.get("uptime", 0))
        yield GaugeMetricFamily("dsmount_open_files", "Files open through the mount.",
                                value=s.get("open", {}).get("files", 0))
        yield GaugeMetricFamily("dsmount_failed_datastores",
                                "Datastores that could not be re-attached.",
                                value=len(s.get("failed", [])))
        warm = s.get("warm", {})
        if warm:
            yield GaugeMetricFamily("dsmount_warm_jobs_running", "Warm jobs running.",
                                    value=warm.get("running", 0))
            yield CounterMetricFamily("dsmount_warm_bytes", "Bytes warm jobs fetched.",
                                      value=warm.get("bytes_fetched", 0))
        yield from _prefetch(s.get("prefetch", {}))

    def _datastores(self, stores: list[dict[str, Any]]) -> Iterator[Metric]:
        label = ["datastore"]
        info = GaugeMetricFamily("dsmount_datastore_info", "One per attached datastore.",
                                 labels=["datastore", "kind", "immutable"])
        degraded = GaugeMetricFamily(
            "dsmount_degraded", "1 while the backend's last attempt failed (retrying).",
            labels=label)
        open_files = GaugeMetricFamily("dsmount_datastore_open_files", "Open files.",
                                       labels=label)
        counters = {
            key: CounterMetricFamily(f"dsmount_{name}", doc, labels=label)
            for name, key, doc in _COUNTERS
        }
        calls = CounterMetricFamily(
            "dsmount_backend_requests", "Backend attempts by operation and outcome.",
            labels=["datastore", "operation", "outcome"])
        latency = _histogram("dsmount_backend_request_duration_seconds",
                             "Duration of backend attempts.", ["datastore", "operation"])
        stall = _histogram(
            "dsmount_read_stall_seconds",
            "How long FUSE reads waited for bytes not in memory (cached reads not observed).",
            label)
        for ds in stores:
            key = str(ds.get("path") or ds.get("name"))
            info.add_metric([key, str(ds.get("kind")), str(bool(ds.get("immutable"))).lower()], 1)
            degraded.add_metric([key], 1 if ds.get("state") == "degraded" else 0)
            open_files.add_metric([key], ds.get("open_files", 0))
            for status_key, family in counters.items():
                family.add_metric([key], ds.get(status_key, 0))
            for op, outcomes in ds.get("backend_calls", {}).items():
                for outcome, n in outcomes.items():
                    calls.add_metric([key, op, outcome], n)
            for op, h in ds.get("backend_latency_seconds", {}).items():
                _add_histogram(latency, [key, op], h)
            if "read_stall_seconds" in ds:
                _add_histogram(stall, [key], ds["read_stall_seconds"])
        yield from (info, degraded, open_files, *counters.values(), calls, latency, stall)


def _prefetch(p: dict[str, Any]) -> Iterator[Metric]:
    """Ordered prefetch (hints and directory order): what it fetched ahead, what readers
    then opened, what was abandoned unread."""
    if not p:
        return
    labels = ["source", "outcome"]
    files = CounterMetricFamily("dsmount_prefetch_files",
                                "Files fetched ahead along hints or directory order.",
                                labels=labels)
    size = CounterMetricFamily("dsmount_prefetch_bytes",
                               "Bytes fetched ahead along hints or directory order.",
                               labels=labels)
    for source, key in (("hint", "hints"), ("dir", "dir_order")):
        stats = p.get(key, {})
        for outcome in ("prefetched", "used", "wasted"):
            files.add_metric([source, outcome], stats.get(f"files_{outcome}", 0))
            size.add_metric([source, outcome], stats.get(f"bytes_{outcome}", 0))
    yield files
    yield size
    yield GaugeMetricFamily("dsmount_hints_active", "Reader hints being followed.",
                            value=p.get("hints_active", 0))
    yield GaugeMetricFamily("dsmount_prefetch_ahead_bytes",
                            "Bytes fetched ahead and not yet opened.",
                            value=p.get("ahead_bytes", 0))


class MetricsServer:
    """`GET /metrics` on HOST:PORT, served from the daemon's trio loop."""

    MAX_HEAD = 16 * 1024
    TIMEOUT = 10.0

    def __init__(self, host: str, port: int, snapshot: Snapshot) -> None:
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(snapshot))  # type: ignore[arg-type]
        self.scrapes = 0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as e:
            raise ConfigError(
                f"cannot serve metrics on {self.address}: {e.strerror or e}") from None
        self.port = listeners[0].socket.getsockname()[1]
        log.info("metrics at http://%s/metrics", self.address)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started()

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(self.TIMEOUT):
                head = await self._read_head(stream)
                if head is not None:
                    await stream.send_all(self.respond(head))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # a scrape must never take the daemon down
            log.exception("metrics request failed")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _read_head(self, stream: trio.SocketStream) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk or len(data) > self.MAX_HEAD:
                return None
            data += chunk
        return data.split(b"\r\n\r\n", 1)[0]

    def respond(self, head: bytes) -> bytes:
        """The whole HTTP response to a request head (request line and headers)."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"only GET and HEAD\n", head_only=False)
        path = parts[1].split("?", 1)[0]
        head_only = parts[0] == "HEAD"
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            self.scrapes += 1
            return _response(200, content_type, encoder(self.registry), head_only=head_only)
        if path == "/":
            return _response(200, "text/plain", b"dsmount: metrics at /metrics\n",
                             head_only=head_only)
        return _response(404, "text/plain", b"not found\n", head_only=head_only)


def _response(status: int, content_type: str, body: bytes, *, head_only: bool) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body
