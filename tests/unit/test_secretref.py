"""Tests of secret references (dsmount/shared/secretref.py): {"env": VAR} and {"file": PATH}.

A secret file others can read is refused with ConfigError (as ssh refuses such keys); a
missing or empty file, an unset variable or a reference naming neither is InvalidRequest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsmount.errors import ConfigError, InvalidRequest
from dsmount.shared.secretref import read_secret_env, read_secret_file, resolve

VALUE = "sv=2024-01-01&sig=abc%2Fdef"


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSMOUNT_TEST_SECRET", f"  {VALUE}\n")
    assert resolve({"env": "DSMOUNT_TEST_SECRET"}) == VALUE


def test_env_from_a_given_mapping() -> None:
    assert read_secret_env("S", {"S": VALUE}) == VALUE


@pytest.mark.parametrize("environ", [{}, {"S": ""}])
def test_unset_or_empty_env_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest, match="S"):
        read_secret_env("S", environ)


def test_whitespace_only_env_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        read_secret_env("S", {"S": " \n"})


def test_file_reference(tmp_path: Path) -> None:
    path = secret_file(tmp_path, f"{VALUE}\n")
    assert resolve({"file": str(path)}) == VALUE
    os.chmod(path, 0o400)
    assert read_secret_file(str(path)) == VALUE


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610, 0o601])
def test_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, VALUE, mode)
    with pytest.raises(ConfigError) as info:
        resolve({"file": str(path)})
    assert str(path) in str(info.value) and "chmod 600" in str(info.value)
    assert VALUE not in str(info.value)


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    path = secret_file(tmp_path, text)
    with pytest.raises(InvalidRequest, match="empty"):
        resolve({"file": str(path)})


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        resolve({"file": str(tmp_path / "absent")})


def test_reference_without_a_source() -> None:
    with pytest.raises(InvalidRequest):
        resolve({"vault": "x"})
