"""Run `FaultProxy`s as a process of their own, driven over stdin/stdout (JSON lines).

The benchmark puts a proxy in front of every store it measures; run inside the benchmark's
process, the proxy's relaying would compete for the GIL with the in-process clients it is
measuring (the direct SDK columns) and its CPU would be billed to them. As its own process it
costs every system alike.

    python -m tests.support.faultproxy_process --upstream 127.0.0.1:10000 [--upstream ...]
        [--latency-ms 10]

Protocol: once every proxy listens, one line `{"ports": {"UPSTREAM_PORT": PROXY_PORT, ...}}`
is printed. Then each line read from stdin is a command answered by one JSON line:
- `stats`: `{"UPSTREAM_PORT": {"stats": {...}, "forwarded": {"get": n, "list": n, ...}}}`
  (`FaultProxy.stats` and `FaultProxy.forwarded`);
- `latency MS`: set every proxy's per-request latency; answers `{"ok": true}`.
An unknown command answers `{"error": "..."}`. End of stdin (or SIGTERM) stops every proxy and
ends the process; nothing is left listening.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from tests.support.faultproxy import FaultProxy


def _upstream(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _command(line: str, proxies: dict[int, FaultProxy]) -> dict[str, Any]:
    word, _, rest = line.strip().partition(" ")
    if word == "stats":
        return {
            str(port): {"stats": p.stats, "forwarded": p.forwarded} for port, p in proxies.items()
        }
    if word == "latency":
        try:
            ms = float(rest)
        except ValueError:
            return {"error": f"latency needs milliseconds, got {rest!r}"}
        for p in proxies.values():
            p.latency(ms / 1000)
        return {"ok": True}
    return {"error": f"unknown command {word!r} (stats, latency MS)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", type=_upstream, action="append", required=True,
                        help="HOST:PORT of a server to proxy (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="fixed delay added to every request, in milliseconds")
    args = parser.parse_args(argv)
    # SIGTERM unwinds through `finally` like end of input does: every proxy is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    proxies: dict[int, FaultProxy] = {}
    try:
        for host, port in args.upstream:
            proxy = FaultProxy(host, port)
            proxy.latency(args.latency_ms / 1000)
            proxy.start()
            proxies[port] = proxy
        _answer({"ports": {str(up): p.port for up, p in proxies.items()}})
        for line in sys.stdin:
            if line.strip():
                _answer(_command(line, proxies))
    finally:
        for proxy in proxies.values():
            proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
