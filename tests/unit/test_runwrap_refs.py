"""`dsmount run` data references: pure parsing, variable names and placeholder expansion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsmount.errors import InvalidRequest
from dsmount.workspace.entries import NAME_RE
from dsmount.workspace.runwrap import (
    ENV_PREFIX,
    Reference,
    check_unique,
    env_name,
    expand,
    parse_download,
    parse_mount,
    parse_mount_rw,
    parse_upload,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cats", Reference("mount", "cats")),
        ("cats:1", Reference("mount", "cats", "", "1")),
        ("cats:latest", Reference("mount", "cats", "", "latest")),
        ("cats:007/train", Reference("mount", "cats", "train", "7")),
        ("cats/train/images/", Reference("mount", "cats", "train/images")),
        ("tr@cats:2/train", Reference("mount", "cats", "train", "2", ref="tr")),
        ("my.data-set_1/a b/c", Reference("mount", "my.data-set_1", "a b/c")),
        ("cats/img@2x", Reference("mount", "cats", "img@2x")),  # "@" after "/" is a path
    ],
)
def test_parse_mount(value: str, expected: Reference) -> None:
    assert parse_mount(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cats", Reference("download", "cats")),
        ("cats/val", Reference("download", "cats", "val")),
        ("cats:3/val", Reference("download", "cats", "val", "3")),
        ("v@cats/val=/tmp/val", Reference("download", "cats", "val", None, "/tmp/val", "v")),
        ("cats=./here", Reference("download", "cats", "", None, "./here")),
    ],
)
def test_parse_download(value: str, expected: Reference) -> None:
    assert parse_download(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cats=./out", Reference("upload", "cats", "", None, "./out")),
        (
            "cats/results/run1=out/model.pkl",
            Reference("upload", "cats", "results/run1", None, "out/model.pkl"),
        ),
        ("o@cats/r=./a=b", Reference("upload", "cats", "r", None, "./a=b", "o")),
    ],
)
def test_parse_upload(value: str, expected: Reference) -> None:
    assert parse_upload(value) == expected


@pytest.mark.parametrize(
    ("parse", "value", "why"),
    [
        (parse_mount, "", "datastore name"),
        (parse_mount, "cats:", "version"),
        (parse_mount, "cats:0", "version"),
        (parse_mount, "cats:x", "version"),
        (parse_mount, "cats/../etc", "'..'"),
        (parse_mount, "-x", "datastore name"),
        (parse_mount, "bad ref@cats", "reference name"),
        (parse_mount, "cats=./x", "no local path"),
        (parse_download, "cats=", "empty local"),
        (parse_upload, "cats", "NAME[/PATH]=LOCAL_PATH"),
        (parse_upload, "cats/x=", "NAME[/PATH]=LOCAL_PATH"),
        (parse_upload, "cats:1=./out", "immutable"),
        (parse_upload, "ca ts=./out", "datastore name"),
    ],
)
def test_bad_references_fail_with_a_clear_message(parse, value: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(value)
    message = str(info.value)
    assert repr(value) in message and why in message
    assert "\n" not in message


def test_reference_name_defaults_to_the_datastore() -> None:
    r = parse_mount("cats:1/train")
    assert r.ref == "cats"
    assert r.env_name == "DSMOUNT_DATAREFERENCE_CATS"
    assert r.placeholder == "{cats}"


@pytest.mark.parametrize(
    ("ref", "env"),
    [("cats", "CATS"), ("my-data.v2", "MY_DATA_V2"), ("Train_1", "TRAIN_1"), ("9x", "9X")],
)
def test_env_name_normalization(ref: str, env: str) -> None:
    assert env_name(ref) == ENV_PREFIX + env


@given(st.from_regex(NAME_RE, fullmatch=True))
def test_env_names_are_valid_shell_variables(ref: str) -> None:
    name = env_name(ref)
    assert name.startswith(ENV_PREFIX)
    assert name.replace("_", "a").isalnum() and name.isascii() and name == name.upper()


def test_duplicate_references_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="two references are named 'cats'"):
        check_unique([parse_mount("cats:1"), parse_upload("cats=./out")])
    with pytest.raises(InvalidRequest, match="both become DSMOUNT_DATAREFERENCE_A_B"):
        check_unique([parse_mount("a-b"), parse_mount("a.b")])
    check_unique([parse_mount("cats:1"), parse_upload("out@cats=./out")])  # named apart: fine


def test_expand_replaces_only_known_placeholders() -> None:
    args = ["python", "t.py", "--data={cats}/train", "{out}", "{unknown}", '{"json": 1}', "{}"]
    assert expand(args, {"cats": "/datastores/cats/1", "out": "/tmp/o"}) == [
        "python",
        "t.py",
        "--data=/datastores/cats/1/train",
        "/tmp/o",
        "{unknown}",
        '{"json": 1}',
        "{}",
    ]
    assert expand(["{a}{a}"], {"a": "x"}) == ["xx"]


def test_parse_mount_rw() -> None:
    assert parse_mount_rw("out@cats/runs/42") == Reference("mount-rw", "cats", "runs/42", ref="out")
    assert parse_mount_rw("cats") == Reference("mount-rw", "cats")
    with pytest.raises(InvalidRequest, match="versions are immutable"):
        parse_mount_rw("cats:2/out")
    with pytest.raises(InvalidRequest, match="no local path"):
        parse_mount_rw("cats=./x")
