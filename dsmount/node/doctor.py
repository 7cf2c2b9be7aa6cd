"""What `dsmount doctor` judges: one pure function per check, facts in, a `Check` out.

Each function takes what was observed (a mode, an errno, a header, the environment) and says
ok, warning or error, with what was seen and, unless ok, the fix. Gathering the facts is done
elsewhere: on the node by `dsmount.node.doctor_node` (the command line's side: files, mounts,
the daemon's cgroup), per datastore by `dsmount.node.doctor_probe` (the daemon's side, which
holds the credentials). So every rule here is unit-tested without a machine in that state.

Invariants:
- No function here reads a file, the clock or the network; time comes in as arguments.
- A `Check` never carries a secret: proxies are shown without their user info, SAS tokens
  only by their expiry.
"""

from __future__ import annotations

import errno
import ipaddress
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from dsmount.shared.sizes import format_size

Status = Literal["ok", "warning", "error"]
STATUSES: tuple[Status, ...] = ("ok", "warning", "error")

SAS_WARN_WITHIN = timedelta(days=7)
# Azure refuses shared-key and SAS requests whose time is 15 minutes off; a minute is already
# a clock that is not synchronised.
SKEW_ERROR_S = 15 * 60.0
SKEW_WARN_S = 60.0
SLOW_CALL_S = 2.0
# Below this much free space a cache or staging directory is about to fail writes.
LOW_SPACE = 256 * 1024**2


@dataclass(frozen=True)
class Check:
    """One line of the report: `name` (what was checked), `subject` (which thing: a path, a
    datastore), the status, what was seen, and the fix (None when ok)."""

    name: str
    subject: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        status = d.get("status")
        return cls(
            name=str(d.get("name", "?")), subject=str(d.get("subject", "")),
            status=status if status in STATUSES else "error",  # type: ignore[arg-type]
            detail=str(d.get("detail", "")),
            fix=None if d.get("fix") is None else str(d.get("fix")),
        )


def exit_code(checks: list[Check]) -> int:
    """1 when any check is an error, else 0 (warnings do not fail)."""
    return 1 if any(c.status == "error" for c in checks) else 0


# -- FUSE ---------------------------------------------------------------------------------------
def check_fuse_device(path: str, exists: bool, is_char_device: bool, usable: bool) -> Check:
    if not exists or not is_char_device:
        what = "missing" if not exists else "not a character device"
        return Check("fuse device", path, "error", f"{path} is {what}",
                     "load the fuse module (modprobe fuse); in a container, pass the device "
                     "(--device /dev/fuse) and the SYS_ADMIN capability")
    if not usable:
        return Check("fuse device", path, "error", f"{path} cannot be opened for reading and "
                     "writing by the daemon's user", "run the daemon as root, or chmod 0666 "
                     f"{path}")
    return Check("fuse device", path, "ok", "present")


def check_fusermount(found: str | None, setuid_root: bool, daemon_root: bool) -> Check:
    if found is None:
        status: Status = "warning" if daemon_root else "error"
        why = ("a stale mount is then cleaned with umount -l" if daemon_root
               else "a daemon not running as root cannot mount without it")
        return Check("fusermount3", "PATH", status, f"fusermount3 not found ({why})",
                     "install the fuse3 package")
    if not daemon_root and not setuid_root:
        return Check("fusermount3", found, "error", f"{found} is not setuid root, so a daemon "
                     "not running as root cannot mount", f"chmod u+s {found} (owned by root)")
    return Check("fusermount3", found, "ok", "setuid root" if setuid_root else "present")


def check_allow_other(fuse_conf: str | None, daemon_root: bool, jupyter_links: list[str]
                      ) -> Check:
    """The mount always asks for allow_other (other users, Jupyter's among them, read it); a
    daemon not running as root may only do so with user_allow_other in /etc/fuse.conf."""
    enabled = fuse_conf is not None and any(
        line.strip() == "user_allow_other" for line in fuse_conf.splitlines())
    links = f"; Jupyter links: {', '.join(jupyter_links)}" if jupyter_links else ""
    if enabled:
        return Check("user_allow_other", "/etc/fuse.conf", "ok", f"enabled{links}")
    fix = "echo user_allow_other >> /etc/fuse.conf (as root), then restart the daemon"
    if not daemon_root:
        return Check("user_allow_other", "/etc/fuse.conf", "error", "missing, and the daemon "
                     "does not run as root: it cannot mount for other users (Jupyter users "
                     f"see nothing){links}", fix)
    if jupyter_links:
        return Check("user_allow_other", "/etc/fuse.conf", "warning", "missing: Jupyter users "
                     f"see the mount only while the daemon runs as root{links}", fix)
    return Check("user_allow_other", "/etc/fuse.conf", "ok",
                 "not needed: the daemon runs as root and no Jupyter link is configured")


# -- the daemon and its mount -------------------------------------------------------------------
def check_daemon(socket: str, answered: bool, pid: int | None, error: str | None) -> Check:
    if answered:
        return Check("daemon", socket, "ok", f"answering (pid {pid})")
    return Check("daemon", socket, "error", f"no daemon answers: {error or 'no reply'}",
                 "start it: systemctl start dsmount, or dsmount daemon --mountpoint M")


def check_mountpoint(mountpoint: str, fstype: str | None, statvfs_errno: int | None,
                     answered: bool, daemon_answers: bool) -> Check:
    """`fstype`: what /proc/self/mountinfo shows there (None: nothing mounted);
    `statvfs_errno`: how statvfs on it failed (None: it did not); `answered`: whether statvfs
    returned at all within the deadline."""
    name = "mountpoint"
    restart = "start the daemon (it cleans a stale mount itself when it starts)"
    if fstype is None:
        if daemon_answers:
            return Check(name, mountpoint, "error", "nothing is mounted here, although the "
                         "daemon answers", "restart the daemon")
        return Check(name, mountpoint, "error", "nothing is mounted here", restart)
    if fstype != "fuse.dsmount":
        return Check(name, mountpoint, "error", f"a {fstype} filesystem is mounted here",
                     f"unmount it (umount {mountpoint}) or give the daemon another mountpoint")
    if not answered:
        return Check(name, mountpoint, "error", "the mount does not answer (statvfs hangs)",
                     f"if the daemon is gone: fusermount3 -u -z {mountpoint}, then {restart}")
    if statvfs_errno in (errno.ENOTCONN, errno.ECONNABORTED):
        return Check(name, mountpoint, "error", "stale mount: transport endpoint is not "
                     "connected (the daemon that served it died)",
                     f"fusermount3 -u -z {mountpoint}, then {restart}")
    if statvfs_errno is not None:
        return Check(name, mountpoint, "error",
                     f"statvfs fails: {errno.errorcode.get(statvfs_errno, statvfs_errno)}",
                     f"fusermount3 -u -z {mountpoint}, then {restart}")
    if not daemon_answers:
        return Check(name, mountpoint, "warning", "mounted and answering, but the control "
                     "socket does not answer", "check that --socket names the daemon's socket")
    return Check(name, mountpoint, "ok", "mounted and answering")


def check_owned_path(name: str, path: str, *, exists: bool, kind_ok: bool, uid: int, mode: int,
                     daemon_uid: int, private_bits: int, kind: str) -> Check:
    """A path the daemon owns: it must exist as `kind`, belong to the daemon's user, and have
    none of `private_bits` (e.g. 0o077 for the state directory) in `mode`."""
    if not exists:
        return Check(name, path, "error", "missing", "start the daemon (it creates it)")
    if not kind_ok:
        return Check(name, path, "error", f"not a {kind}", "remove it and restart the daemon")
    if uid != daemon_uid:
        return Check(name, path, "error", f"owned by uid {uid}, the daemon runs as uid "
                     f"{daemon_uid}", f"chown {daemon_uid} {path}")
    if mode & private_bits:
        allowed = 0o777 & ~private_bits
        return Check(name, path, "error" if mode & 0o002 else "warning",
                     f"mode {mode & 0o7777:04o} gives others access", f"chmod "
                     f"{mode & allowed:o} {path}")
    return Check(name, path, "ok", f"uid {uid}, mode {mode & 0o7777:04o}")


# -- resources ----------------------------------------------------------------------------------
def check_memory(budget: int, limit_bytes: int, limit_text: str) -> Check:
    """The cache budget against the memory limit the daemon lives under (its cgroup's)."""
    seen = f"{format_size(budget)} under the {limit_text}"
    fix = (f"lower [cache] memory_budget well below {format_size(limit_bytes)} (or leave it "
           "unset to derive it from the limit), or raise the limit")
    if budget >= limit_bytes:
        return Check("memory", "cache budget", "error", f"{seen}: the kernel kills the daemon "
                     "(and the readers' files with it) before the cache fills", fix)
    if budget > limit_bytes * 3 // 4:
        return Check("memory", "cache budget", "warning",
                     f"{seen}: little room is left for the daemon itself", fix)
    return Check("memory", "cache budget", "ok", seen)


def check_free_space(name: str, path: str, free: int, budget: int, used: int) -> Check:
    """A directory that may grow by `budget - used` more bytes, on a filesystem with `free`."""
    room = max(budget - used, 0)
    seen = f"{format_size(free)} free, budget {format_size(budget)} ({format_size(used)} used)"
    if free < min(LOW_SPACE, room) or free == 0:
        return Check(name, path, "error", f"{seen}: writes there fail soon",
                     "free space on that filesystem, or move the directory")
    if free < room:
        return Check(name, path, "warning", f"{seen}: the budget does not fit",
                     f"lower the budget below {format_size(free + used)} or free space")
    return Check(name, path, "ok", seen)


# -- per datastore ------------------------------------------------------------------------------
def check_call(key: str, latency_s: float | None, error: str | None) -> Check:
    if error is not None:
        took = f" after {latency_s * 1000:.0f} ms" if latency_s is not None else ""
        return Check("reachable", key, "error", f"the check call failed{took}: {error}",
                     "see the lines below (credential, clock, proxy); `dsmount list` shows "
                     "how it is attached")
    assert latency_s is not None
    ms = latency_s * 1000
    seen = f"answered in {ms:.0f} ms" if ms >= 10 else f"answered in {ms:.1f} ms"
    if latency_s > SLOW_CALL_S:
        return Check("reachable", key, "warning", f"{seen} (slow)",
                     "check the network path to the storage endpoint")
    return Check("reachable", key, "ok", seen)


def sas_expiry(token: str) -> datetime | None:
    """The expiry (`se=`) of a SAS token, UTC; None when it has none or it cannot be read."""
    values = parse_qs(token.lstrip("?")).get("se")
    if not values:
        return None
    text = values[0].strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def check_sas(key: str, expiry: datetime | None, now: datetime) -> Check:
    fix = "make a new SAS token and attach the datastore again with it"
    if expiry is None:
        return Check("sas token", key, "warning", "its expiry (se=) cannot be read", fix)
    when = expiry.strftime("%Y-%m-%d %H:%M UTC")
    left = expiry - now
    if left <= timedelta(0):
        return Check("sas token", key, "error", f"expired {when}", fix)
    if left <= SAS_WARN_WITHIN:
        hours = left.total_seconds() / 3600
        span = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} hours"
        return Check("sas token", key, "warning", f"expires {when} (in {span})", fix)
    return Check("sas token", key, "ok", f"expires {when}")


def check_clock_skew(key: str, date_header: str | None, sent: float, received: float,
                     error: str | None = None) -> Check:
    """The service's `Date` against this node's clock at the middle of the request."""
    if date_header is None:
        return Check("clock", key, "warning",
                     f"not measured: no Date header ({error or 'no answer'})",
                     "make the endpoint reachable, then run doctor again")
    try:
        server = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Check("clock", key, "warning", "the Date header cannot be read",
                     "check what answers at the endpoint (a proxy?)")
    skew = server - (sent + received) / 2
    # The header has whole seconds; the request's own duration bounds what we can know.
    slack = 1.0 + (received - sent) / 2
    seen = f"{abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} the service"
    if abs(skew) <= slack:
        return Check("clock", key, "ok", "in step with the service")
    fix = "synchronise the clock (chrony / systemd-timesyncd)"
    if abs(skew) >= SKEW_ERROR_S:
        return Check("clock", key, "error", f"{seen}: signed requests are refused", fix)
    if abs(skew) >= SKEW_WARN_S:
        return Check("clock", key, "warning", seen, fix)
    return Check("clock", key, "ok", seen)


def _proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """{scheme: proxy, "no": NO_PROXY} as urllib reads them (lower case wins)."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        lower = name.lower()
        if value and lower.endswith("_proxy") and (lower not in found or name == lower):
            found[lower] = value
    return {k[: -len("_proxy")]: v for k, v in found.items()}


def shown_proxy(url: str) -> str:
    """A proxy URL without user info (it may hold a password)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def _local_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def check_proxy(key: str, endpoint: str, environ: Mapping[str, str], call_failed: bool
                ) -> Check:
    """Whether the proxy environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) covers the endpoint:
    what route the daemon's requests take, and whether that route makes sense."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    proxies = _proxies(environ)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    no_proxy = {"no": proxies["no"]} if "no" in proxies else {}
    if proxy is None:
        other = [f"{s.upper()}_PROXY" for s in ("http", "https") if s != parts.scheme
                 and s in proxies]
        if call_failed and other:
            return Check("proxy", key, "warning", f"direct to {host}: {', '.join(other)} is set "
                         f"but does not apply to {parts.scheme} URLs",
                         f"set {parts.scheme.upper()}_PROXY if {host} is reachable only "
                         "through the proxy")
        return Check("proxy", key, "ok", f"direct to {host} (no proxy set for {parts.scheme})")
    if no_proxy and urllib.request.proxy_bypass_environment(host, no_proxy):
        return Check("proxy", key, "ok", f"direct to {host} (NO_PROXY covers it)")
    via = shown_proxy(proxy)
    fix = f"add {host} to NO_PROXY (and no_proxy) in the daemon's environment"
    if _local_host(host):
        return Check("proxy", key, "warning", f"requests to the local address {host} go "
                     f"through the proxy {via}", fix)
    if call_failed:
        return Check("proxy", key, "warning", f"the call failed through the proxy {via}",
                     f"check the proxy, or {fix} if it is reachable directly")
    return Check("proxy", key, "ok", f"through the proxy {via}")
