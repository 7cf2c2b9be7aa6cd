"""Tests of THE errno mapping (dsmount/errors.py): each typed error, OSError, and the rest."""

from __future__ import annotations

import errno

import pytest

from dsmount import errors as e

EXPECTED = {
    e.NotFound: errno.ENOENT,
    e.AlreadyExists: errno.EEXIST,
    e.AuthFailed: errno.EACCES,
    e.PermissionDenied: errno.EACCES,
    e.Transient: errno.EIO,
    e.TimedOut: errno.EIO,
    e.Changed: errno.ESTALE,
    e.IntegrityError: errno.EIO,
    e.ReadOnly: errno.EROFS,
    e.NotEmpty: errno.ENOTEMPTY,
    e.IsADirectory: errno.EISDIR,
    e.NotADirectory: errno.ENOTDIR,
    e.NotSupported: errno.EPERM,
    e.XattrNotSupported: errno.ENOTSUP,
    e.CrossDevice: errno.EXDEV,
    e.NoSpace: errno.ENOSPC,
    e.TooManyWriters: errno.ENFILE,
    e.Busy: errno.EBUSY,
    e.InvalidRequest: errno.EINVAL,
    e.UnsupportedVersion: errno.EINVAL,
    e.ConfigError: errno.EIO,
    e.BackendError: errno.EIO,
    e.DsmountError: errno.EIO,
}


@pytest.mark.parametrize(("cls", "number"), EXPECTED.items(), ids=[c.__name__ for c in EXPECTED])
def test_each_error_class(cls: type[e.DsmountError], number: int) -> None:
    assert e.to_errno(cls("x")) == number


def test_every_error_class_is_covered() -> None:
    defined = {
        obj for obj in vars(e).values() if isinstance(obj, type) and issubclass(obj, e.DsmountError)
    }
    assert defined == set(EXPECTED)


def test_subclasses_follow_their_parent() -> None:
    class Throttled(e.Transient):
        pass

    class Gone(e.NotFound):
        pass

    assert e.to_errno(Throttled()) == errno.EIO
    assert e.to_errno(Gone()) == errno.ENOENT


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.ENOENT, errno.EACCES, errno.ENOTDIR])
def test_oserror_keeps_its_errno(number: int) -> None:
    assert e.to_errno(OSError(number, "x")) == number
    assert e.to_errno(FileNotFoundError(errno.ENOENT, "x")) == errno.ENOENT


@pytest.mark.parametrize(
    "exc", [OSError("no errno"), ValueError("x"), KeyError("k"), RuntimeError(), Exception()]
)
def test_anything_else_is_eio(exc: BaseException) -> None:
    assert e.to_errno(exc) == errno.EIO


def test_error_codes_are_unique_and_complete() -> None:
    for code, cls in e.ERROR_CODES.items():
        assert cls.code == code
    codes = [cls.code for cls in EXPECTED]
    assert len(codes) == len(set(codes))
    # Every code the daemon can send maps back to its class on the client.
    assert set(codes) <= set(e.ERROR_CODES)
