"""Who is on the other end of a control connection: the peer's credentials as the kernel
recorded them at connect (SO_PEERCRED, SO_PEERGROUPS), as plain data.

This is identity only. What a peer may do is the node's rule (`dsmount.node.access`); the
server here only decides who may talk to the socket at all.

Invariant: a peer's groups are never taken from a process that no longer runs as the peer's
uid (a pid can be reused by another user's process once the client exits).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import trio

_PEERCRED = struct.Struct("3i")
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13+; not in every Python


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    # The supplementary groups the kernel recorded at connect (SO_PEERGROUPS); None: unknown,
    # read from /proc/PID instead.
    groups: frozenset[int] | None = None


def peer_of(sock: trio.socket.SocketType | socket.socket) -> Peer:
    """The credentials of the process that connected `sock` (a Unix stream socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    groups: frozenset[int] | None
    try:
        # The groups as of connect(): unlike /proc/PID they cannot belong to a later process.
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 1024)  # up to 256 groups
        groups = frozenset(struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:  # ERANGE (more groups) or an old kernel: /proc, checked, instead
        groups = None
    return Peer(pid, uid, gid, groups)


def groups_of(peer: Peer) -> set[int]:
    """The peer's gid and supplementary groups: as the kernel recorded them at connect, else
    from /proc/PID - but only while that process still runs as the peer's uid."""
    groups = {peer.gid}
    if peer.groups is not None:
        return groups | peer.groups
    extra: set[int] = set()
    uid_ok = False
    try:
        with open(f"/proc/{peer.pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    uid_ok = all(int(u) == peer.uid for u in line.split()[1:3])
                elif line.startswith("Groups:"):
                    extra.update(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return groups | extra if uid_ok else groups
