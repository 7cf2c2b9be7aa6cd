"""The memory the daemon may use, and the cache budget that follows from it.

The effective limit is the tightest `memory.max` of the daemon's own cgroup and its ancestors
(cgroup v2, found from /proc/self/cgroup; v1's `memory.limit_in_bytes` likewise), else the
machine's physical memory. With no `[cache] memory_budget` configured, the budget is the
smaller of 1 GiB and a quarter of that limit (never fewer than 4 blocks): a container limited
to 2 GiB gets 512 MiB, a 64 GiB node 1 GiB. A configured budget above the limit is refused at
start: the kernel would kill the daemon (and every reader of the mount with it) long before
the cache filled.

`DSMOUNT_CGROUP_ROOT` (default /sys/fs/cgroup) moves where cgroup files are read, for tests and
for containers that mount the cgroup tree elsewhere.

Invariants:
- Reading never fails the daemon: an unreadable or odd file counts as "no limit there".
- `MemoryBudget.describe()` is what `status` shows: the budget, the limit, where it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dsmount.errors import ConfigError
from dsmount.shared.sizes import format_size

DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_ROOT_ENV = "DSMOUNT_CGROUP_ROOT"
DEFAULT_CAP = 1024**3  # the default budget never exceeds 1 GiB
DEFAULT_SHARE = 4  # ... nor a quarter of the limit
_V1_UNLIMITED = 1 << 60  # v1 reports "no limit" as a huge page-rounded number


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # "cgroup" or "physical"
    path: str | None = None  # the memory.max file that set it

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        what = "cgroup memory limit" if self.source == "cgroup" else "physical memory"
        return f"{what} {format_size(self.bytes)}{where}"


@dataclass(frozen=True)
class MemoryBudget:
    budget: int
    configured: bool
    limit: MemoryLimit

    def describe(self) -> dict[str, object]:
        how = ("configured" if self.configured else
               f"default: min({format_size(DEFAULT_CAP)}, 1/{DEFAULT_SHARE} of the limit)")
        return {
            "budget_bytes": self.budget,
            "budget_from": how,
            "limit_bytes": self.limit.bytes,
            "limit_source": self.limit.source,
            "limit_path": self.limit.path,
            "limit": self.limit.describe(),
        }


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None  # "max", or something we do not understand: no limit here
    value = int(text)
    return value if 0 < value < _V1_UNLIMITED else None


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(the v2 path, the v1 memory controller's path) of /proc/self/cgroup's text."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def cgroup_limit(root: str | None = None, proc_cgroup: str | None = None) -> MemoryLimit | None:
    """The tightest memory limit of this process's cgroup and its ancestors, or None."""
    base = Path(root or os.environ.get(CGROUP_ROOT_ENV) or DEFAULT_CGROUP_ROOT)
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    v2, v1 = _cgroup_paths(proc_cgroup)
    candidates: list[tuple[Path, str]] = []
    if v2 is not None:
        candidates.append((base, v2))
    if v1 is not None:
        candidates.append((base / "memory", v1))
    best: MemoryLimit | None = None
    for mount, rel in candidates:
        name = "memory.max" if mount == base and rel == v2 else "memory.limit_in_bytes"
        # From the cgroup itself up to the root: a parent's limit binds its children too.
        parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
        for depth in range(len(parts), -1, -1):
            path = mount.joinpath(*parts[:depth], name)
            value = _read_limit(path)
            if value is not None and (best is None or value < best.bytes):
                best = MemoryLimit(value, "cgroup", str(path))
    return best


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def effective_limit(root: str | None = None, proc_cgroup: str | None = None) -> MemoryLimit:
    physical = physical_memory()
    limit = cgroup_limit(root, proc_cgroup)
    if limit is not None and limit.bytes < physical:
        return limit
    return MemoryLimit(physical, "physical")


def choose_budget(configured: int, block_size: int, limit: MemoryLimit) -> MemoryBudget:
    """The cache budget: `configured` if set (0: not set) and below the limit, else the
    default from the limit. Raises ConfigError for a budget the limit cannot hold."""
    if configured:
        if configured >= limit.bytes:
            raise ConfigError(
                f"[cache] memory_budget {format_size(configured)} is not below the "
                f"{limit.describe()}: the daemon would be killed before the cache filled; "
                "lower memory_budget (or leave it unset to derive it from the limit)"
            )
        return MemoryBudget(configured, True, limit)
    budget = max(min(DEFAULT_CAP, limit.bytes // DEFAULT_SHARE), 4 * block_size)
    if budget > limit.bytes // 2:
        raise ConfigError(
            f"the {limit.describe()} is too small for 4 blocks of {format_size(block_size)}: "
            "lower [cache] block_size or raise the limit"
        )
    return MemoryBudget(budget, False, limit)
