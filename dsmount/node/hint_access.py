"""Who a hint acts for: the reading rules a prefetch obeys, and whether its caller still runs.

A prefetch fetches only what its caller could read through the mount itself, by the rules the
kernel applies to what the mount reports (it is mounted with `default_permissions`): private
datastores of others are not there at all (`Datastore.visible_to`), and a file needs the read
bit for the caller (owner, group or other class of the mode the mount shows) while every
directory on the way needs the search bit. Root reads everything.

Invariants:
- The attributes checked are the mount's own (`attributes_of`: presentation overrides, a
  private datastore's root), never the backend's raw ones.
- A process is identified by its pid AND its start time, so a pid reused by another process
  after the caller exited is not taken for the caller.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

from dsmount.node.fs.attributes import Attributes, FsSettings, attributes_of
from dsmount.node.fs.datastore import Datastore
from dsmount.node.fs.inodes import Node
from dsmount.storage.base import Entry
from dsmount.storage.local_access import Reader


def may(attrs: Attributes, reader: Reader, want: int) -> bool:
    """Whether `reader` has the permission bits `want` (4 read, 1 search) on `attrs`."""
    if reader.uid == 0:
        return True
    mode = attrs.mode
    if attrs.uid == reader.uid:
        bits = (mode >> 6) & 7
    elif attrs.gid in reader.groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def may_read_file(ds: Datastore, path: str, entry: Entry, reader: Reader,
                  settings: FsSettings, dirs: list[Entry]) -> bool:
    """Whether `reader` may open `path` (a file with `entry`) of `ds` for reading, given the
    entries of the directories on the way (`dirs`: the datastore root first)."""
    if not ds.visible_to(reader.uid):
        return False
    parts = path.split("/")
    for depth, dir_entry in enumerate(dirs):
        node = Node(0, ds, "/".join(parts[:depth]), dir_entry)
        if not may(attributes_of(node, settings), reader, 1):
            return False
    attrs = attributes_of(Node(0, ds, path, entry), settings)
    return stat.S_ISREG(attrs.mode) and may(attrs, reader, 4)


def reader_of_process(pid: int, uid: int) -> Reader:
    """`uid` as the process `pid` runs it: its gid and supplementary groups from /proc, but
    only while that process still runs as `uid` (else only the uid counts)."""
    groups: set[int] = set()
    uid_ok = False
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    uid_ok = all(int(u) == uid for u in line.split()[1:3])
                elif line.startswith("Gid:"):
                    groups.update(int(g) for g in line.split()[1:3])
                elif line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return Reader(uid, frozenset(groups if uid_ok else ()))


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22); None if
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessWatch:
    """A process a hint lives with (its caller)."""

    pid: int
    started: int | None

    @classmethod
    def of(cls, pid: int) -> ProcessWatch:
        return cls(pid, _start_time(pid))

    def alive(self) -> bool:
        now = _start_time(self.pid)
        return now is not None and (self.started is None or now == self.started)
