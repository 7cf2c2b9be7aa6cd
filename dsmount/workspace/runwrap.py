"""`dsmount run`: run a command with data references, like Azure ML's as_mount / as_download /
as_upload.

    dsmount run --mount cats:1/train --download val@cats/val --upload cats/results=./out \
        -- python train.py --data {cats} --val {val} --out {cats_1}

Reference syntax (parsing is pure: `parse_mount`, `parse_mount_rw`, `parse_download`,
`parse_upload`):
    --mount    [REF@]NAME[:VERSION][/PATH]           VERSION: 1, 2, ... or "latest"
    --mount-rw [REF@]NAME[/PATH]                     attached read-write; PATH created
    --download [REF@]NAME[:VERSION][/PATH][=LOCAL_DIR]
    --upload   [REF@]NAME[/PATH]=LOCAL_PATH          PATH is the target directory
REF, the reference name, defaults to NAME; give one when a datastore is referenced twice. For
each reference the command gets `DSMOUNT_DATAREFERENCE_<REF>` (REF upper-cased, every
character other than A-Z and 0-9 turned into "_") set to the path on this node, and every
`{REF}` in its arguments replaced by that path (other braces are left alone). A datastore
PATH in --download/--upload cannot contain "=" (the separator).

What happens, in order:
1. every datastore is looked up in the registry (an unknown name fails before anything runs);
2. mounts: a datastore (version) already attached to the daemon is reused, otherwise it is
   attached through the control socket and detached at the end; a read-write mount
   (`--mount-rw`, what Azure ML calls rw_mount: outputs reach the datastore while the command
   runs, each file committed when the command closes it) attaches the datastore read-write,
   reuses it only if it is attached read-write already, and creates PATH; downloads go to LOCAL_DIR,
   else to `<workdir>/<REF>` (workdir: --workdir, else a temp dir removed at the end); an
   upload's LOCAL_PATH gets its parent directory created (the command creates the path);
3. the command runs. SIGTERM/SIGHUP sent to dsmount are forwarded to it; Ctrl-C reaches it
   from the terminal and dsmount waits for it to finish;
4. uploads run after it exits, also when it failed (saying so); a directory's contents go
   below PATH, a file goes to PATH/<its name>;
5. what was attached is detached, the temp workdir removed.
Exit status: the command's (128+N if killed by signal N); 125 when dsmount itself failed
(before the command ran, or an upload after it succeeded); 126 / 127 when the command could
not be executed / was not found (the `env`/`docker run` conventions).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsmount.errors import Busy, DsmountError, InvalidRequest, NotFound
from dsmount.storage.names import clean_path
from dsmount.workspace.entries import NAME_RE, parse_version
from dsmount.workspace.registry import Registry
from dsmount.workspace.versions import attach_spec_for, version_source

ENV_PREFIX = "DSMOUNT_DATAREFERENCE_"
EXIT_DSMOUNT_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
MODES = ("mount", "mount-rw", "download", "upload")


@dataclass(frozen=True)
class Reference:
    """One data reference of a run."""

    mode: str  # mount | mount-rw | download | upload
    datastore: str
    path: str = ""  # inside the datastore ("" = its root)
    version: str | None = None  # mount / download: a version number or "latest"
    local: str | None = None  # upload: the local path; download: the destination dir
    ref: str = ""  # reference name; defaults to the datastore name
    overwrite: bool = False  # upload / download: replace files that differ

    def __post_init__(self) -> None:
        if not self.ref:
            object.__setattr__(self, "ref", self.datastore)

    @property
    def env_name(self) -> str:
        return env_name(self.ref)

    @property
    def placeholder(self) -> str:
        return "{" + self.ref + "}"


def env_name(ref: str) -> str:
    """`DSMOUNT_DATAREFERENCE_<REF>`: upper-cased, anything but A-Z0-9 becomes "_"."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", ref.upper())


# -- parsing (pure) ----------------------------------------------------------------------------
def _fail(option: str, value: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"invalid {option} {value!r}: {why}")


def _split_ref(option: str, value: str) -> tuple[str, str]:
    """(REF or "", the rest) of "[REF@]NAME...": REF is looked for before the first / : =."""
    head = re.split(r"[/:=]", value, maxsplit=1)[0]
    if "@" not in head:
        return "", value
    ref, _, rest = value.partition("@")
    if not NAME_RE.fullmatch(ref):
        raise _fail(option, value, f"reference name {ref!r} must be letters, digits, . _ -")
    return ref, rest


def _name_version(option: str, value: str, part: str, *, versions: bool) -> tuple[str, str | None]:
    name, sep, version = part.partition(":")
    if not NAME_RE.fullmatch(name):
        raise _fail(option, value, f"{name!r} is not a datastore name")
    if not sep:
        return name, None
    if not versions:
        raise _fail(option, value, "versions are immutable: upload to the datastore itself")
    if version != "latest":
        try:
            version = str(parse_version(version))
        except InvalidRequest:
            raise _fail(option, value, f"version {version!r} is not 1, 2, ... or latest") from None
    return name, version


def _path(option: str, value: str, path: str) -> str:
    try:
        return clean_path(path)
    except InvalidRequest as e:
        raise _fail(option, value, str(e)) from None


def parse_mount(value: str) -> Reference:
    """`[REF@]NAME[:VERSION][/PATH]`."""
    ref, rest = _split_ref("--mount", value)
    if "=" in rest.split("/", 1)[0]:
        raise _fail("--mount", value, "a mount has no local path (no '=')")
    part, _, path = rest.partition("/")
    name, version = _name_version("--mount", value, part, versions=True)
    return Reference("mount", name, _path("--mount", value, path), version, ref=ref)


def parse_mount_rw(value: str) -> Reference:
    """`[REF@]NAME[/PATH]`: a read-write mount (no version: versions are immutable)."""
    ref, rest = _split_ref("--mount-rw", value)
    if "=" in rest.split("/", 1)[0]:
        raise _fail("--mount-rw", value, "a mount has no local path (no '=')")
    part, _, path = rest.partition("/")
    name, _ = _name_version("--mount-rw", value, part, versions=False)
    return Reference("mount-rw", name, _path("--mount-rw", value, path), ref=ref)


def parse_download(value: str) -> Reference:
    """`[REF@]NAME[:VERSION][/PATH][=LOCAL_DIR]`."""
    ref, rest = _split_ref("--download", value)
    remote, eq, local = rest.partition("=")
    if eq and not local:
        raise _fail("--download", value, "empty local directory after '='")
    part, _, path = remote.partition("/")
    name, version = _name_version("--download", value, part, versions=True)
    return Reference(
        "download", name, _path("--download", value, path), version, local or None, ref=ref
    )


def parse_upload(value: str) -> Reference:
    """`[REF@]NAME[/PATH]=LOCAL_PATH`."""
    ref, rest = _split_ref("--upload", value)
    remote, eq, local = rest.partition("=")
    if not eq or not local:
        raise _fail("--upload", value, "expected NAME[/PATH]=LOCAL_PATH")
    part, _, path = remote.partition("/")
    name, _ = _name_version("--upload", value, part, versions=False)
    return Reference("upload", name, _path("--upload", value, path), None, local, ref=ref)


def check_unique(refs: Sequence[Reference]) -> None:
    """Reference names (and so their variables) must be distinct."""
    seen: dict[str, Reference] = {}
    for r in refs:
        other = seen.get(r.env_name)
        if other is not None:
            raise InvalidRequest(
                f"two references are named {r.ref!r}"
                if other.ref == r.ref
                else f"references {other.ref!r} and {r.ref!r} both become {r.env_name}"
                + "; name one with REF@ (e.g. out@NAME)"
            )
        seen[r.env_name] = r


_PLACEHOLDER = re.compile(r"\{([^{}/=:@]+)\}")


def expand(args: Sequence[str], values: dict[str, str]) -> list[str]:
    """`args` with every `{REF}` of a known reference replaced by its path."""
    return [_PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), a) for a in args]


# -- running ----------------------------------------------------------------------------------
@dataclass
class _Session:
    registry: Registry
    socket: str | None
    quiet: bool
    say: Callable[[str], None]
    workdir: Path | None = None
    own_workdir: bool = False
    attached: list[tuple[str, str | None]] = field(default_factory=list)
    _client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from dsmount.control.client import ControlClient

            self._client = ControlClient(self.socket)
        return self._client

    def note(self, message: str) -> None:
        if not self.quiet:
            self.say(message)

    def work(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="dsmount-run-"))
            self.own_workdir = True
        return self.workdir

    def mount(self, r: Reference, state: dict[str, Any]) -> str:
        if "mountpoint" not in state:
            state["mountpoint"] = self.client().call("status")["mountpoint"]
            listed = self.client().call("list")["datastores"]
            state["attached"] = {d["path"] for d in listed}
            state["writable"] = {d["path"] for d in listed if d.get("read_write")}
        write = r.mode == "mount-rw"
        spec = attach_spec_for(r.datastore, r.version, registry=self.registry)
        if write:
            spec["read_write"] = True
        version = spec.get("version")
        key = r.datastore if version is None else f"{r.datastore}/{version}"
        if key not in state["attached"]:
            try:
                self.client().call("attach", name=r.datastore, **spec)
            except DsmountError as e:
                if e.code != "already_exists":  # attached by someone else meanwhile: reuse
                    raise
                if write:
                    state["writable"].update(self._writable())
            else:
                self.attached.append((r.datastore, version))
                self.note(f"attached {key}" + (" read-write" if write else ""))
                if write:
                    state["writable"].add(key)
            state["attached"].add(key)
        if write and key not in state["writable"]:
            raise InvalidRequest(
                f"{r.ref}: datastore {key} is attached read-only; detach it (or attach it "
                "--read-write) to write into it"
            )
        where = Path(state["mountpoint"]) / key / r.path
        if write:
            try:
                where.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DsmountError(f"{r.ref}: cannot create {r.path} in {key}: "
                                   f"{e.strerror}") from None
        if not where.exists():
            raise NotFound(f"{r.ref}: {r.path or '/'} does not exist in datastore {key}")
        return str(where)

    def _writable(self) -> set[str]:
        return {d["path"] for d in self.client().call("list")["datastores"]
                if d.get("read_write")}

    def download(self, r: Reference) -> str:
        from dsmount.workspace import transfer

        dest = Path(r.local).absolute() if r.local else self.work() / r.ref
        if r.version is not None:
            store, prefix = version_source(r.datastore, r.version, r.path, registry=self.registry)
        else:
            store, prefix = self.registry.store(r.datastore), r.path
        with store:
            single = bool(prefix) and store.stat(prefix) is not None
            summary = transfer.download(
                store, dest, prefix, overwrite=r.overwrite, quiet=self.quiet, desc=f"{r.ref}"
            )
        self.note(f"{r.ref}: {summary}")
        return str(dest / prefix.rsplit("/", 1)[-1]) if single else str(dest)

    def upload(self, r: Reference) -> None:
        from dsmount.workspace import transfer

        local = Path(r.local or "").absolute()
        if not local.exists():
            raise DsmountError(f"{r.ref}: {local} was not created: nothing uploaded")
        with self.registry.store(r.datastore) as store:
            summary = transfer.upload_path(
                store, local, r.path, overwrite=r.overwrite, quiet=self.quiet, desc=f"{r.ref}"
            )
        self.note(f"{r.ref}: {summary} to {r.datastore}/{r.path}")

    def cleanup(self) -> None:
        for name, version in reversed(self.attached):
            key = name if version is None else f"{name}/{version}"
            try:
                try:
                    self.client().call("detach", name=name, version=version)
                except Busy:  # something the command started still holds a file open
                    self.client().call("detach", name=name, version=version, force=True)
                self.note(f"detached {key}")
            except DsmountError as e:
                self.say(f"could not detach {key}: {e}")
        self.attached.clear()
        if self.own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run(
    refs: Sequence[Reference],
    command: Sequence[str],
    *,
    socket: str | None = None,
    workdir: str | Path | None = None,
    quiet: bool = False,
    registry: Registry | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """Prepare the references, run `command`, upload outputs, clean up (see the module
    docstring). Returns the exit status; raises DsmountError if preparing failed."""
    if not command:
        raise InvalidRequest("no command given: dsmount run [references] -- COMMAND [ARGS...]")
    check_unique(refs)
    reg = registry or Registry()
    for r in refs:
        reg.get(r.datastore)  # an unknown name fails before anything is attached
    say = say or (lambda m: print(f"dsmount run: {m}", file=sys.stderr, flush=True))
    session = _Session(reg, socket, quiet, say, Path(workdir).absolute() if workdir else None)
    values: dict[str, str] = {}
    try:
        state: dict[str, Any] = {}
        for r in refs:
            if r.mode in ("mount", "mount-rw"):
                values[r.ref] = session.mount(r, state)
            elif r.mode == "download":
                values[r.ref] = session.download(r)
            else:
                local = Path(r.local or "").absolute()
                local.parent.mkdir(parents=True, exist_ok=True)
                values[r.ref] = str(local)
        uploads = [r for r in refs if r.mode == "upload"]
        code, ran = _execute(
            expand(command, values),
            {**os.environ, **{env_name(k): v for k, v in values.items()}},
            say,
        )
        if ran and code != 0:
            also = "; uploading its outputs anyway" if uploads else ""
            say(f"command exited with status {code}{also}")
        failed = False
        for r in uploads:
            try:
                session.upload(r)
            except DsmountError as e:
                say(f"upload of {r.ref} failed: {e}")
                failed = True
        return EXIT_DSMOUNT_FAILED if failed and code == 0 else code
    finally:
        session.cleanup()


def _execute(argv: list[str], env: dict[str, str], say: Callable[[str], None]) -> tuple[int, bool]:
    """(exit status, whether the command started at all)."""
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: Any) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                child[0].send_signal(signum)

    # A Python handler (not SIG_IGN) for SIGINT: exec resets it, so the child still gets the
    # terminal's Ctrl-C while we keep running to upload and clean up.
    handlers = {signal.SIGINT: lambda s, f: None, signal.SIGTERM: forward, signal.SIGHUP: forward}
    in_main = threading.current_thread() is threading.main_thread()  # else signal() refuses
    old = {s: signal.signal(s, h) for s, h in handlers.items()} if in_main else {}
    try:
        try:
            child.append(subprocess.Popen(argv, env=env))
        except FileNotFoundError:
            say(f"{argv[0]}: command not found")
            return EXIT_NOT_FOUND, False
        except PermissionError:
            say(f"{argv[0]}: permission denied")
            return EXIT_CANNOT_EXECUTE, False
        code = child[0].wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return (128 - code if code < 0 else code), True
