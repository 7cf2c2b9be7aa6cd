#!/usr/bin/env bash
# The project's test command (also what CI runs via .ci/run): install/verify dependencies, lint,
# then run pytest with any arguments passed through, e.g. `bash scripts/test.sh tests/unit -x`.
# In CI (CI set), tests that need FUSE or Azurite fail instead of skipping when those are absent.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

if [[ -n "${CI:-}" ]]; then
    export DSMOUNT_REQUIRE_FUSE=1
    export DSMOUNT_REQUIRE_AZURITE=1
fi

echo "[test] ruff check"
.venv/bin/ruff check dsmount tests scripts

echo "[test] pytest $*"
.venv/bin/pytest -q "$@"
