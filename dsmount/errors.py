"""The dsmount error hierarchy and THE one mapping from errors to errno.

Backends, the cache and the filesystem core raise these typed errors; only this module knows
errno numbers. The FUSE adapter calls `to_errno` on whatever escapes the core, so an unexpected
exception still becomes an errno (EIO) instead of ending `pyfuse3.main`.
"""

from __future__ import annotations

import errno


class DsmountError(Exception):
    """Base class of every error dsmount raises on purpose."""

    code = "error"  # stable machine-readable code used by the control protocol


class NotFound(DsmountError):
    """The path, datastore or resource does not exist."""

    code = "not_found"


class AlreadyExists(DsmountError):
    """A name is already taken (an attached datastore, a registered name)."""

    code = "already_exists"


class AuthFailed(DsmountError):
    """The server refused our credentials (401/403)."""

    code = "auth_failed"


class PermissionDenied(DsmountError):
    """The local caller is not allowed to do this."""

    code = "permission_denied"


class Transient(DsmountError):
    """A failure worth retrying: 5xx, throttling, a dropped or refused connection, a timeout."""

    code = "transient"


class TimedOut(Transient):
    """The overall deadline for one request passed."""

    code = "timed_out"


class Changed(DsmountError):
    """The object changed under an open handle (its ETag no longer matches)."""

    code = "changed"


class IntegrityError(DsmountError):
    """Bytes received do not match what the server promised (length or checksum)."""

    code = "integrity"


class ReadOnly(DsmountError):
    """A write was attempted on the read-only tree."""

    code = "read_only"


class NotEmpty(DsmountError):
    """A directory that must be empty (rmdir, rename over it) is not."""

    code = "not_empty"


class IsADirectory(DsmountError):
    """A file operation named a directory (unlink of a directory, a file renamed over one)."""

    code = "is_a_directory"


class NotADirectory(DsmountError):
    """A directory operation named a file (rmdir of a file, a directory renamed over one)."""

    code = "not_a_directory"


class NotSupported(DsmountError):
    """The datastore cannot do this at all (hard links, symbolic links, special files)."""

    code = "not_supported"


class XattrNotSupported(NotSupported):
    """Extended attributes are not stored."""

    code = "xattr_not_supported"


class CrossDevice(DsmountError):
    """A rename dsmount will not do in one step (across datastores, or a blob directory with
    more entries than the rename limit): `mv` then copies and deletes by itself."""

    code = "cross_device"


class NoSpace(DsmountError):
    """The write staging area (its byte budget or its disk) is full."""

    code = "no_space"


class TooManyWriters(DsmountError):
    """The daemon's cap on files open for writing is reached."""

    code = "too_many_writers"


class Busy(DsmountError):
    """The resource is in use (a datastore with open files)."""

    code = "busy"


class InvalidRequest(DsmountError):
    """The request is malformed or names an invalid option."""

    code = "invalid_request"


class UnsupportedVersion(InvalidRequest):
    """The client speaks another control-protocol version."""

    code = "unsupported_version"


class ConfigError(DsmountError):
    """A configuration file or option is invalid."""

    code = "config_error"


class BackendError(DsmountError):
    """A backend failure that is neither transient nor one of the specific kinds above."""

    code = "backend_error"


_ERRNO: list[tuple[type[BaseException], int]] = [
    (NotFound, errno.ENOENT),
    (AlreadyExists, errno.EEXIST),
    (PermissionDenied, errno.EACCES),
    (AuthFailed, errno.EACCES),
    (ReadOnly, errno.EROFS),
    (NotEmpty, errno.ENOTEMPTY),
    (IsADirectory, errno.EISDIR),
    (NotADirectory, errno.ENOTDIR),
    (XattrNotSupported, errno.ENOTSUP),
    # Linux's answer for link(2)/symlink(2)/mknod(2) on a filesystem that has no such thing.
    (NotSupported, errno.EPERM),
    (CrossDevice, errno.EXDEV),
    (NoSpace, errno.ENOSPC),
    (TooManyWriters, errno.ENFILE),
    (Changed, errno.ESTALE),
    (Busy, errno.EBUSY),
    (InvalidRequest, errno.EINVAL),
    (IntegrityError, errno.EIO),
    (Transient, errno.EIO),
    (DsmountError, errno.EIO),
]


def to_errno(exc: BaseException) -> int:
    """The errno a FUSE request answers with when `exc` escaped the core. Anything unknown: EIO."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    for kind, number in _ERRNO:
        if isinstance(exc, kind):
            return number
    return errno.EIO


def from_oserror(e: OSError, what: str) -> DsmountError:
    """THE mapping of a local OSError (local datastores, the disk cache) to a dsmount error,
    with a message naming `what` and nothing of the caller's internals."""
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"{what}: no such file or directory")
    if e.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{what}: permission denied")
    if e.errno == errno.EEXIST:
        return AlreadyExists(f"{what}: already exists")
    if e.errno == errno.ENOTEMPTY:
        return NotEmpty(f"{what}: directory not empty")
    if e.errno == errno.EISDIR:
        return IsADirectory(f"{what}: is a directory")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{what}: no space left")
    return BackendError(f"{what}: {e.strerror}")


ERROR_CODES: dict[str, type[DsmountError]] = {
    cls.code: cls
    for cls in (
        NotFound, AlreadyExists, AuthFailed, PermissionDenied, Transient, TimedOut, Changed,
        IntegrityError, ReadOnly, NotEmpty, IsADirectory, NotADirectory, NotSupported,
        XattrNotSupported, CrossDevice, NoSpace, TooManyWriters, Busy, InvalidRequest,
        UnsupportedVersion, ConfigError, BackendError, DsmountError,
    )
}
