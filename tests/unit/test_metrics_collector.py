"""The metrics collector on a real status snapshot (no daemon): every figure becomes a metric
family prometheus_client can render and parse back, and the shipped Grafana dashboard asks only
for metrics the collector exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from dsmount.node.cache.blocks import BlockCache
from dsmount.node.fs.datastore import Datastore
from dsmount.node.memory_limit import MemoryLimit, choose_budget
from dsmount.node.metrics import MetricsServer, StatusCollector
from tests.support.memory_backend import MemoryBackend

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dsmount-dashboard.json"


def _status() -> dict:
    ds = Datastore(name="cats", backend=MemoryBackend({"a": b"x"}), version="2")
    ds.counters.bytes_read = 10
    ds.counters.reads = 2
    ds.counters.stalls.observe(0.02)
    ds.counters.stalls.observe(3.0)
    ds.backend.stats.record("read", "ok", 0.004)
    ds.backend.stats.record("read", "transient", 1.5)
    ds.backend.stats.degraded = True
    return {
        "pid": 1, "uptime": 5.0, "cache": BlockCache(64 * 2**20).as_dict(),
        "open": {"files": 0, "dirs": 0, "inodes": 1}, "datastores": [ds.status()],
        "failed": [],
        "memory": choose_budget(0, 2**20, MemoryLimit(2**31, "cgroup", "/m")).describe(),
        "disk_cache": {"dir": "/d", "budget_bytes": 100, "used_bytes": 7, "hits": 1,
                       "misses": 2, "corrupt_discarded": 0},
        "warm": {"running": 1, "bytes_fetched": 99},
    }


def _samples() -> dict[tuple[str, frozenset], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(_status))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_figure_is_exported_with_its_labels() -> None:
    s = _samples()
    key = frozenset({("datastore", "cats/2")})
    assert s[("dsmount_read_bytes_total", key)] == 10
    assert s[("dsmount_reads_total", key)] == 2
    assert s[("dsmount_degraded", key)] == 1
    assert s[("dsmount_read_stall_seconds_count", key)] == 2
    assert s[("dsmount_read_stall_seconds_bucket", key | {("le", "0.025")})] == 1
    assert s[("dsmount_read_stall_seconds_bucket", key | {("le", "+Inf")})] == 2
    assert abs(s[("dsmount_read_stall_seconds_sum", key)] - 3.02) < 1e-9
    read = key | {("operation", "read")}
    assert s[("dsmount_backend_requests_total", read | {("outcome", "transient")})] == 1
    assert s[("dsmount_backend_request_duration_seconds_count", read)] == 2
    assert s[("dsmount_cache_budget_bytes", frozenset())] == 64 * 2**20
    assert s[("dsmount_memory_limit_bytes", frozenset({("source", "cgroup")}))] == 2**31
    assert s[("dsmount_disk_cache_bytes", frozenset())] == 7
    assert s[("dsmount_warm_bytes_total", frozenset())] == 99


def test_the_http_answer_is_a_complete_response() -> None:
    server = MetricsServer("127.0.0.1", 0, _status)
    ok = server.respond(b"GET /metrics HTTP/1.1\r\nHost: x")
    head, _, body = ok.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"dsmount_read_bytes_total" in body
    assert server.respond(b"HEAD /metrics HTTP/1.1").endswith(b"\r\n\r\n")
    assert server.respond(b"POST /metrics HTTP/1.1").startswith(b"HTTP/1.1 405")
    assert server.respond(b"GET /other HTTP/1.1").startswith(b"HTTP/1.1 404")
    assert server.respond(b"garbage").startswith(b"HTTP/1.1 405")


def test_the_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = {name for name, _ in _samples()}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {m for e in exprs for m in re.findall(r"\bdsmount_[a-z_]+", e)}
    assert len(used) >= 15
    assert used <= exported, used - exported
    assert any("dsmount_read_stall_seconds" in e for e in exprs)
