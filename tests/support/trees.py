"""Build source datasets on disk and describe trees, to compare a source with its mount.

`make_tree(root, spec)` builds a tree from a spec: {relative path: bytes (the content) | int
(that many deterministic pseudo-random bytes) | None (an empty directory)}; parents are created
as needed. Every file and directory gets a distinct, fixed mtime with a sub-second part, so a
mount that reports "now" or drops the seconds is caught.

`describe_tree(root)` walks a tree (with `os.walk`, i.e. `os.scandir` + `os.stat`) into
{relative path: Node(kind, size, mtime)}; `sha256_file` hashes one file in 1 MiB reads.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
BASE_MTIME_NS = 1_600_000_000 * 10**9 + 250_000_000  # 2020-09-13, plus a quarter second

TreeSpec = Mapping[str, bytes | int | None]


def default_tree_spec(many: int = 1100) -> dict[str, bytes | int | None]:
    """The standard source dataset of the mount tests.

    Nested and deep directories, an empty directory, empty files, small files, a few-MiB
    random file that is not a multiple of any block size, unicode and spaces in names, and a
    directory with more entries than one listing page of the local backend (1000) or one
    readdir batch of the core (512).
    """
    spec: dict[str, bytes | int | None] = {
        "README.txt": b"a dsmount test dataset\n",
        "empty.bin": b"",
        "empty-dir": None,
        "data/small.csv": b"id,label\n1,cat\n2,dog\n",
        "data/one-byte": b"x",
        "data/random-5MiB.bin": 5 * MiB + 12345,
        "data/random-300KiB.bin": 300 * 1024 + 7,
        "data/nested/zero-length.txt": b"",
        "deep/" + "/".join(f"level{i:02d}" for i in range(20)) + "/bottom.txt": b"deep\n",
        "with spaces/a file with spaces.txt": b"spaces\n",
        "unicode/h\u00e9llo w\u00f6rld \u2713.txt": b"unicode\n",
        "\u65e5\u672c\u8a9e/\u30c7\u30fc\u30bf.csv": "a,b\n\u3042,1\n".encode(),
    }
    for i in range(many):
        spec[f"many/item-{i:05d}.txt"] = f"item {i}\n".encode()
    return spec


def _content(rel: str, value: bytes | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return random.Random(rel).randbytes(value)  # deterministic per path


def make_tree(root: str | Path, spec: TreeSpec) -> Path:
    """Create `spec` under `root` (see the module docstring); returns `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dirs: set[Path] = set()
    for i, (rel, value) in enumerate(sorted(spec.items())):
        path = root / rel
        if value is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_content(rel, value))
            mtime = BASE_MTIME_NS + i * 3_600 * 10**9
            os.utime(path, ns=(mtime, mtime))
        dirs.update(p for p in (path, *path.parents) if root in p.parents and p.is_dir())
    # Directories last and deepest first: creating children changes a directory's mtime.
    for j, d in enumerate(sorted(dirs, key=lambda p: len(p.parts), reverse=True)):
        mtime = BASE_MTIME_NS - (j + 1) * 86_400 * 10**9
        os.utime(d, ns=(mtime, mtime))
    return root


@dataclass(frozen=True)
class Node:
    kind: str  # "file" or "dir"
    size: int  # 0 for directories (their size is meaningless across filesystems)
    mtime: float


def describe_tree(root: str | Path) -> dict[str, Node]:
    """Every entry below `root` (not root itself) as {relative path: Node}."""
    root = str(root)
    out: dict[str, Node] = {}
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                node = Node("dir", 0, st.st_mtime)
            elif stat.S_ISREG(st.st_mode):
                node = Node("file", st.st_size, st.st_mtime)
            else:
                node = Node(f"other({stat.S_IFMT(st.st_mode):o})", 0, st.st_mtime)
            out[os.path.relpath(path, root)] = node
    return out


def _raise(e: OSError) -> None:
    raise e


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
