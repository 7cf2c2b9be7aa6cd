"""The Python half of scripts/quickstart.sh: make the demo dataset, and read it back through
the mount the way a training job does.

    python scripts/quickstart_demo.py make DIR        # the dataset, and DIR.sha256.json
    python scripts/quickstart_demo.py train ROOT EXPECTED [--epochs N] [--workers N]
    python scripts/quickstart_demo.py verify ROOT EXPECTED
    python scripts/quickstart_demo.py free-port
    python scripts/quickstart_demo.py wait-http URL [--timeout S]

The dataset is a few hundred small "images" in class folders (train/ and val/, one folder per
class) and one larger shard, all pseudo-random bytes from a fixed seed, so every run makes the
same files. `make` records each file's SHA-256; `train` reads every file of ROOT in a shuffled
order with a pool of readers (as a data loader's workers do), epoch after epoch, and checks
every byte against that record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CLASSES = ("cat", "dog", "bird")
PER_CLASS = {"train": 100, "val": 12}
SMALL = (4 * 1024, 48 * 1024)  # bytes of one "image": JPEG-sized
BIG = 48 * 1024**2  # one larger file: a shard, a checkpoint, a packed record file
SEED = 20261206


def make(root: Path) -> dict[str, str]:
    """Write the dataset under `root`; return {relative path: sha256}."""
    rng = random.Random(SEED)
    digests: dict[str, str] = {}

    def put(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()

    for split, count in PER_CLASS.items():
        for label in CLASSES:
            for i in range(count):
                put(f"{split}/{label}/{label}_{i:04d}.jpg", rng.randbytes(rng.randint(*SMALL)))
    put("shards/train-00000.bin", rng.randbytes(BIG))
    return digests


def _files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("_"))  # _versions/
        rel = os.path.relpath(dirpath, root)
        out += [f if rel == "." else f"{rel}/{f}" for f in filenames]
    return sorted(out)


def _sha256(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def epoch(root: Path, expected: dict[str, str], order: list[str], workers: int
          ) -> tuple[int, float]:
    """Read every file of `order` through `root`; (bytes, seconds). Raises on a mismatch."""
    start = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda rel: (rel, *_sha256(root / rel)), order))
    seconds = time.monotonic() - start
    bad = [rel for rel, _, digest in results if expected[rel] != digest]
    if bad:
        raise SystemExit(f"{len(bad)} file(s) differ from what was uploaded, e.g. {bad[0]}")
    return sum(size for _, size, _ in results), seconds


def _check_tree(root: Path, expected: dict[str, str]) -> list[str]:
    found = _files(root)
    if found != sorted(expected):
        missing = sorted(set(expected) - set(found))[:3]
        extra = sorted(set(found) - set(expected))[:3]
        raise SystemExit(f"{root}: the tree differs (missing {missing}, unexpected {extra})")
    return found


def train(root: Path, expected: dict[str, str], epochs: int, workers: int) -> None:
    files = _check_tree(root, expected)
    print(f"training on {root}: {len(files)} files, {workers} reader threads")
    rng = random.Random(0)
    for n in range(1, epochs + 1):
        order = files[:]
        rng.shuffle(order)
        size, seconds = epoch(root, expected, order, workers)
        print(f"  epoch {n}: {len(order)} files, {size / 1024**2:.1f} MiB in {seconds:.2f} s "
              f"({len(order) / seconds:.0f} files/s, {size / 1024**2 / seconds:.0f} MiB/s); "
              "every byte matches the source")


def verify(root: Path, expected: dict[str, str]) -> None:
    files = _check_tree(root, expected)
    size, seconds = epoch(root, expected, files, 4)
    print(f"{root}: {len(files)} files, {size / 1024**2:.1f} MiB read in {seconds:.2f} s; "
          "every byte matches the source")


def wait_http(url: str, timeout: float) -> None:
    """Return once anything answers HTTP at `url` (an error status counts: it is up)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing answers at {url} after {timeout:.0f} s: {e}") from None
            time.sleep(0.2)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("train")
    p.add_argument("root", type=Path)
    p.add_argument("expected", type=Path)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=4)
    p = sub.add_parser("verify")
    p.add_argument("root", type=Path)
    p.add_argument("expected", type=Path)
    sub.add_parser("free-port")
    p = sub.add_parser("wait-http")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "make":
        digests = make(args.dir)
        Path(f"{args.dir}.sha256.json").write_text(json.dumps(digests, indent=1))
        total = sum((args.dir / rel).stat().st_size for rel in digests)
        print(f"made {len(digests)} files ({total / 1024**2:.1f} MiB) in {args.dir}")
    elif args.command == "wait-http":
        wait_http(args.url, args.timeout)
    elif args.command == "free-port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
    else:
        expected = json.loads(args.expected.read_text())
        if args.command == "train":
            train(args.root, expected, args.epochs, args.workers)
        else:
            verify(args.root, expected)


if __name__ == "__main__":
    main(sys.argv[1:])
