"""Benchmark dsmount workspace transfers (upload / download) against a local, in-memory Azurite.

It measures ONLY the public API `dsmount.api` (Workspace, Datastore), present in every layout
of the repository, imported from `--repo`: the same suite compares two versions of the code.

    python -m scripts.bench transfer --repo .
    python -m scripts.bench transfer --repo /path/to/other/checkout --json other.json
    python -m scripts.bench transfer --repo . --scale 0.05 --repeat 1     # smoke run

Measured, each repeated --repeat times (fresh remote target / local directory every time):
  1. upload of N small files (default 500 x 100 KiB, random bytes, in 10 subdirectories);
  2. download of those files into a fresh local directory;
  3. upload of one big file (default 256 MiB);
  4. download of it.
--scale multiplies the file count and all sizes. The `dsmount` package is imported from
--repo (it is put first on sys.path), and the path actually imported is printed, so you can
check which code was measured; the harness (Azurite) is this checkout's. The registry is a
temporary DSMOUNT_REGISTRY directory; Azurite and every temporary directory are removed at the
end, also on failure or SIGTERM.
Throughput: MB/s is 10**6 bytes per second.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from scripts.bench.harness.meters import median
from scripts.bench.harness.servers import start_azurite

KiB = 1024
MiB = 1024 * KiB

BASE_SMALL_FILES = 500
BASE_SMALL_SIZE = 100 * KiB
BASE_SUBDIRS = 10
BASE_BIG_SIZE = 256 * MiB
WRITE_CHUNK = 8 * MiB

OPS = ("upload_small", "download_small", "upload_big", "download_big")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench transfer", description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repo", default=".", help="repository root to import dsmount and tests from")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each operation (3)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies file count and sizes")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    p.add_argument("--tmpdir", help="parent of the temporary directory (default: system temp)")
    p.add_argument(
        "--no-verify", action="store_true", help="skip the (untimed) content check of downloads"
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.scale <= 0:
        p.error("--scale must be > 0")
    return args


# --- helpers -------------------------------------------------------------------------------------


def _fmt_size(n: int) -> str:
    for unit, div in (("GiB", 1024**3), ("MiB", MiB), ("KiB", KiB)):
        if n >= div:
            return f"{n / div:.4g} {unit}"
    return f"{n} B"


def _git_rev(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except Exception:
        return None


def make_small_tree(root: Path, count: int, size: int, subdirs: int) -> tuple[int, str]:
    """`count` random files of `size` bytes spread over `subdirs` directories; (bytes, digest)."""
    root.mkdir(parents=True)
    for d in range(subdirs):
        (root / f"d{d:02d}").mkdir()
    for i in range(count):
        (root / f"d{i % subdirs:02d}" / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    return count * size, tree_digest(root)


def make_big_file(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(WRITE_CHUNK, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(WRITE_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    """Digest over (relative path, content) of every file below root."""
    h = hashlib.sha256()
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _find_downloaded_root(dest: Path, expect_files: int, expect_names: set[str]) -> Path:
    """The directory inside `dest` that mirrors the uploaded tree (a download may or may not
    recreate the remote prefix below `dest`, depending on the layout: accept both)."""
    subdirs = sorted((p for p in dest.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
    candidates = [dest, *subdirs]
    for c in candidates:
        try:
            names = {x.name for x in c.iterdir()}
        except OSError:
            continue
        if expect_names <= names:
            return c
    raise AssertionError(f"downloaded tree not found below {dest} (expected {expect_files} files)")


def _summary_count(summary: Any) -> tuple[int | None, int | None]:
    return (
        getattr(summary, "files_transferred", None),
        getattr(summary, "bytes_transferred", None),
    )


def _check_summary(op: str, summary: Any, files: int, nbytes: int) -> None:
    got_files, got_bytes = _summary_count(summary)
    if got_files is not None and got_files != files:
        raise AssertionError(f"{op}: transferred {got_files} file(s), expected {files}: {summary}")
    if got_bytes is not None and got_bytes != nbytes:
        raise AssertionError(f"{op}: transferred {got_bytes} bytes, expected {nbytes}: {summary}")


# --- the benchmark -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    repo = Path(args.repo).resolve()
    if not (repo / "dsmount" / "api.py").is_file():
        raise SystemExit(f"{repo} has no dsmount/api.py: give the repo root with --repo")
    sys.path.insert(0, str(repo))

    n_small = max(1, round(BASE_SMALL_FILES * args.scale))
    small_size = max(1, round(BASE_SMALL_SIZE * args.scale))
    subdirs = max(1, min(BASE_SUBDIRS, n_small))
    big_size = max(1, round(BASE_BIG_SIZE * args.scale))

    base = Path(tempfile.mkdtemp(prefix="dsmount-bench-", dir=args.tmpdir))
    azurite = None
    service = None
    container = f"bench-{uuid.uuid4().hex[:12]}"
    saved_env = os.environ.get("DSMOUNT_REGISTRY")
    try:
        registry_dir = base / "registry"
        registry_dir.mkdir(mode=0o700)
        # Before importing dsmount, in case a layout reads it at import time.
        os.environ["DSMOUNT_REGISTRY"] = str(registry_dir)

        import dsmount
        from dsmount.api import Datastore, Workspace

        dsmount_path = str(Path(dsmount.__file__).resolve().parent)
        print(f"dsmount from : {dsmount_path}  (repo {repo}, rev {_git_rev(repo) or '?'})")
        if not dsmount_path.startswith(str(repo)):
            print(f"WARNING: dsmount was not imported from --repo {repo}", file=sys.stderr)
        print(f"python       : {sys.executable} {platform.python_version()}")
        print(f"temp dir     : {base}")
        print(
            f"workload     : {n_small} x {_fmt_size(small_size)} in {subdirs} dirs"
            f" ({_fmt_size(n_small * small_size)}); 1 x {_fmt_size(big_size)};"
            f" repeat {args.repeat}; scale {args.scale:g}"
        )

        t0 = time.perf_counter()
        small_src = base / "src-small"
        small_bytes, small_digest = make_small_tree(small_src, n_small, small_size, subdirs)
        big_src_dir = base / "src-big"
        big_src = big_src_dir / "big.bin"
        big_digest = make_big_file(big_src, big_size)
        print(f"source data  : generated in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        azurite = start_azurite(base / "azurite")
        print(f"azurite      : {azurite.blob_endpoint} (pid {azurite.pid}, "
              f"ready in {time.perf_counter() - t0:.1f} s)")  # fmt: skip

        ws = Workspace()
        ds = Datastore.register_azure_blob_container(
            ws,
            "bench",
            container_name=container,
            account_name=azurite.ACCOUNT,
            account_key=azurite.KEY,
            endpoint=azurite.blob_endpoint,
            create_if_not_exists=True,
        )
        service = azurite.blob_service_client()
        container_client = service.get_container_client(container)

        def drop_remote(prefix: str) -> None:
            """Untimed: delete the repeat's blobs so in-memory Azurite does not keep growing."""
            names = [b.name for b in container_client.list_blobs(name_starts_with=prefix + "/")]
            for name in names:  # one by one: no dependence on Azurite's batch support
                container_client.delete_blob(name)

        small_names = {f"d{d:02d}" for d in range(subdirs)}
        times: dict[str, list[float]] = {op: [] for op in OPS}

        def timed(op: str, fn: Any) -> Any:
            t = time.perf_counter()
            result = fn()
            dt = time.perf_counter() - t
            times[op].append(dt)
            print(f"  {op:<15} {dt:9.3f} s   {result}")
            return result

        for r in range(1, args.repeat + 1):
            print(f"repeat {r}/{args.repeat}")
            tag = f"r{r}-{uuid.uuid4().hex[:6]}"

            # 1. + 2. many small files
            remote = f"small-{tag}"
            s = timed("upload_small", lambda remote=remote: ds.upload(
                str(small_src), target_path=remote, overwrite=True, show_progress=False))
            _check_summary("upload_small", s, n_small, small_bytes)
            dest = base / f"dl-small-{tag}"
            s = timed("download_small", lambda dest=dest, remote=remote: ds.download(
                str(dest), prefix=remote, overwrite=True, show_progress=False))
            _check_summary("download_small", s, n_small, small_bytes)
            got = _find_downloaded_root(dest, n_small, small_names)
            if len(_files_under(got)) != n_small:
                raise AssertionError(f"download_small: {len(_files_under(got))} files in {got}")
            if not args.no_verify and tree_digest(got) != small_digest:
                raise AssertionError("download_small: downloaded content differs from the source")
            shutil.rmtree(dest)
            drop_remote(remote)

            # 3. + 4. one big file
            remote = f"big-{tag}"
            s = timed("upload_big", lambda remote=remote: ds.upload(
                str(big_src_dir), target_path=remote, overwrite=True, show_progress=False))
            _check_summary("upload_big", s, 1, big_size)
            dest = base / f"dl-big-{tag}"
            s = timed("download_big", lambda dest=dest, remote=remote: ds.download(
                str(dest), prefix=remote, overwrite=True, show_progress=False))
            _check_summary("download_big", s, 1, big_size)
            found = [p for p in _files_under(dest) if p.name == "big.bin"]
            if len(found) != 1 or found[0].stat().st_size != big_size:
                raise AssertionError(f"download_big: big.bin not found intact below {dest}")
            if not args.no_verify and file_digest(found[0]) != big_digest:
                raise AssertionError("download_big: downloaded content differs from the source")
            shutil.rmtree(dest)
            drop_remote(remote)

        workload = {
            "upload_small": (n_small, small_bytes),
            "download_small": (n_small, small_bytes),
            "upload_big": (1, big_size),
            "download_big": (1, big_size),
        }
        results: dict[str, Any] = {}
        for op in OPS:
            files, nbytes = workload[op]
            med = median(times[op])
            results[op] = {
                "files": files,
                "bytes": nbytes,
                "median_s": med,
                "times_s": times[op],
                "mb_per_s": nbytes / med / 1e6 if med > 0 else None,
                "files_per_s": files / med if med > 0 else None,
            }
        return {
            "repo": str(repo),
            "git_rev": _git_rev(repo),
            "dsmount_path": dsmount_path,
            "python": platform.python_version(),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": {
                "scale": args.scale,
                "repeat": args.repeat,
                "small_files": n_small,
                "small_file_size": small_size,
                "subdirs": subdirs,
                "big_file_size": big_size,
                "verify": not args.no_verify,
            },
            "results": results,
        }
    finally:
        if service is not None:
            with contextlib.suppress(Exception):
                service.close()
        if azurite is not None:
            azurite.stop()
        if saved_env is None:
            os.environ.pop("DSMOUNT_REGISTRY", None)
        else:
            os.environ["DSMOUNT_REGISTRY"] = saved_env
        shutil.rmtree(base, ignore_errors=True)


def print_table(report: dict[str, Any]) -> None:
    rows = [("operation", "median s", "MB/s", "files/s", "times (s)")]
    for op, r in report["results"].items():
        rate = r["mb_per_s"]
        frate = r["files_per_s"]
        rows.append((
            op,
            f"{r['median_s']:.3f}",
            f"{rate:.1f}" if rate is not None else "-",
            f"{frate:.1f}" if frate is not None and r["files"] > 1 else "-",
            " ".join(f"{t:.3f}" for t in r["times_s"]),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for n, row in enumerate(rows):
        numbers = [c.rjust(w) for c, w in zip(row[1:4], widths[1:4], strict=True)]
        cells = [row[0].ljust(widths[0]), *numbers]
        print("  ".join(cells + [row[4]]))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0
