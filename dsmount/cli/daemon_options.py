"""Daemon flags added beside the original ones in `dsmount.cli.node`, with the config
overrides they stand for, kept here so the daemon command stays small."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def daemon_extra_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--metrics-address HOST:PORT`: serve Prometheus metrics there ([metrics] address)."""
    return click.option(
        "--metrics-address", default=None, metavar="HOST:PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9464 "
        "[[metrics] address; off unless set].",
    )(fn)


def daemon_extra_overrides(extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config overrides ({section: {key: value}}) of the flags above."""
    return {"metrics": {"address": extra.get("metrics_address")}}
