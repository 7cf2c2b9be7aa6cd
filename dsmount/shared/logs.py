"""Logging setup: plain lines on stderr with level (journal-friendly), never a secret.

Messages about one datastore carry its name as "[name]". Under systemd (JOURNAL_STREAM set)
timestamps are left to the journal.
"""

from __future__ import annotations

import logging
import os
import sys

_FMT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = _FMT if os.environ.get("JOURNAL_STREAM") else "%(asctime)s " + _FMT
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Azure SDK logs request URLs and headers at INFO/DEBUG (SAS tokens live in URLs).
    for noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy", "urllib3",
                  "aiohttp", "pyfuse3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
