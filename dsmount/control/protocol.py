"""The control protocol as plain data: no sockets here.

One request per line, one response per line, UTF-8 JSON objects:
    request:  {"v": 1, "id": <any>, "op": "attach", "args": {...}}
    response: {"v": 1, "id": <same>, "ok": true, "result": {...}}
              {"v": 1, "id": <same>, "ok": false, "error": {"code": "not_found", "message": "..."}}
A request with another major version is refused with code "unsupported_version".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dsmount.errors import ERROR_CODES, DsmountError, InvalidRequest, UnsupportedVersion
from dsmount.storage.spec import DatastoreSpec

# Where the daemon listens unless told otherwise ([daemon] socket, --socket, DSMOUNT_SOCKET).
DEFAULT_SOCKET = "/run/dsmount/control.sock"

PROTOCOL_VERSION = 1
MAX_LINE = 1024 * 1024  # a request larger than this is refused and the connection closed
MAX_MESSAGE = 1000  # characters of an error message in a reply
OPERATIONS = frozenset({"ping", "attach", "detach", "list", "status", "refresh",
                        "warm", "warm_status", "warm_cancel", "doctor"})


@dataclass
class Request:
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    id: Any = None

    def encode(self) -> bytes:
        return _dump({"v": PROTOCOL_VERSION, "id": self.id, "op": self.op, "args": self.args})


@dataclass
class Response:
    ok: bool
    result: Any = None
    code: str | None = None
    message: str | None = None
    id: Any = None

    @classmethod
    def success(cls, result: Any, id: Any = None) -> Response:
        return cls(True, result=result, id=id)

    @classmethod
    def failure(cls, code: str, message: str, id: Any = None) -> Response:
        # Messages may quote what the client sent (an unknown op, a bad name): bounded, so a
        # reply is never as large as a request (a client that only reads after sending a
        # batch would otherwise stall the daemon's send).
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "..."
        return cls(False, code=code, message=message, id=id)

    @classmethod
    def from_error(cls, exc: DsmountError, id: Any = None) -> Response:
        return cls.failure(exc.code, str(exc), id)

    def encode(self) -> bytes:
        body: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": self.id, "ok": self.ok}
        if self.ok:
            body["result"] = self.result
        else:
            body["error"] = {"code": self.code, "message": self.message}
        return _dump(body)

    def raise_for_error(self) -> Any:
        """The result, or the typed error the daemon reported."""
        if self.ok:
            return self.result
        cls = ERROR_CODES.get(self.code or "", DsmountError)
        error = cls(self.message or self.code or "error")
        if cls is DsmountError and self.code:
            error.code = self.code  # keep codes this client does not know (e.g. "internal")
        raise error


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def _load(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("a message must be a JSON object")
    try:
        # JSON may escape lone surrogates ("\ud800"), which are not text: refuse them here
        # rather than let them reach code that encodes names (paths, logs, the state file).
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest("a message must be valid Unicode (no lone surrogates)") from None
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply") from None
    return obj


def parse_request(line: bytes) -> Request:
    """A Request from one line; InvalidRequest (code 'invalid_request') if malformed."""
    obj = _load(line)
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"protocol version {version!r} not supported (this daemon speaks {PROTOCOL_VERSION})"
        )
    op = obj.get("op")
    if not isinstance(op, str):
        raise InvalidRequest("missing 'op'")
    if op not in OPERATIONS:
        raise InvalidRequest(f"unknown operation {op!r} (known: {', '.join(sorted(OPERATIONS))})")
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidRequest("'args' must be an object")
    return Request(op=op, args=args, id=obj.get("id"))


def parse_response(line: bytes) -> Response:
    obj = _load(line)
    if obj.get("ok") is True:
        return Response.success(obj.get("result"), obj.get("id"))
    err = obj.get("error") or {}
    if not isinstance(err, dict):
        err = {}
    return Response.failure(str(err.get("code", "error")), str(err.get("message", "")),
                            obj.get("id"))


def get_str(args: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"missing argument {key!r}")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"argument {key!r} must be a string")
    return value


def get_version(args: dict[str, Any]) -> str | None:
    """A datastore version: a string or a non-negative integer, or absent."""
    value = args.get("version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRequest("argument 'version' must be a string or an integer")
    return str(value)


def get_target(args: dict[str, Any]) -> tuple[str, str | None]:
    """(name, version) of the datastore a request names: `name` and `version`, or a `name`
    written "name/version"."""
    name, version = get_str(args, "name") or "", get_version(args)
    if version is None and "/" in name:
        name, version = name.split("/", 1)
    return name, version


def get_number(args: dict[str, Any], key: str, default: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidRequest(f"argument {key!r} must be a number >= 0")
    return float(value)


def get_paths(args: dict[str, Any], key: str = "paths") -> list[str]:
    """A list of path strings (absent: an empty list)."""
    value = args.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"argument {key!r} must be a list of strings")
    if len(value) > 10_000:
        raise InvalidRequest(f"argument {key!r} has more than 10000 entries")
    return value


def get_bool(args: dict[str, Any], key: str, default: bool = False) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"argument {key!r} must be true or false")
    return value


ATTACH_FIELDS = frozenset({"name", "version", "immutable", "ttl", "owner", "shared", "uid",
                           "gid", "file_mode", "dir_mode", "manifest", "read_write"})
OVERRIDES = ("uid", "gid", "file_mode", "dir_mode")  # root-only presentation overrides
MAX_ID = 2**32 - 2  # the largest uid/gid (2**32 - 1 is the kernel's "no id")


def get_id(args: dict[str, Any], key: str) -> int | None:
    """A uid or gid: an integer in range, or absent."""
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise InvalidRequest(f"argument {key!r} must be a uid/gid number (0 to {MAX_ID})")
    return value


def get_mode(args: dict[str, Any], key: str) -> int | None:
    """Permission bits: an integer 0..0o777 or an octal string ("0640"), or absent."""
    value = args.get(key)
    if value is None:
        return None
    mode: int | None = None
    if isinstance(value, str) and value and all(c in "01234567" for c in value):
        mode = int(value, 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    if mode is None or not 0 <= mode <= 0o777:
        raise InvalidRequest(f"argument {key!r} must be permission bits, e.g. \"0640\"")
    return mode


def get_optional_bool(args: dict[str, Any], key: str) -> bool | None:
    value = args.get(key)
    if value is None:
        return None
    return get_bool(args, key)


@dataclass(frozen=True)
class AttachRequest:
    """An `attach` request: where the datastore appears (name, version), how it is cached,
    whose it is and what it shows (owner, shared, the root-only overrides), and where it lives
    (`storage`, validated by `DatastoreSpec`). The wire form is one flat object, as the state
    file of a restarted daemon also keeps it (so an owner survives a restart).

    `owner`/`shared` as a client sends them are wishes: the node (node/access.py) decides them
    from the peer's credentials (a non-root peer always owns what it attaches) before
    anything is attached or saved.

    `read_write`: only a blob container or a file share, attached without a version and not
    immutable, can be read-write: a version is an immutable snapshot, and the (root) daemon
    does not write local directories on a caller's behalf."""

    name: str
    storage: DatastoreSpec
    version: str | None = None
    immutable: bool = False
    ttl: float | None = None  # None: the daemon's [metadata] ttl
    owner: int | None = None  # None: root's (also what the config attaches)
    shared: bool | None = None  # None: shared if root's, private if a user's
    uid: int | None = None
    gid: int | None = None
    file_mode: int | None = None
    dir_mode: int | None = None
    # A version's manifest object (relative to the datastore root): namespace from it, no
    # LIST or HEAD; None: the datastore's own listings.
    manifest: str | None = None
    read_write: bool = False

    def __post_init__(self) -> None:
        if not self.read_write:
            return
        if self.version is not None:
            raise InvalidRequest(
                f"version {self.version} of {self.name!r} is immutable: attach the datastore "
                "itself read-write to write into it"
            )
        if self.immutable:
            raise InvalidRequest("a read-write datastore cannot be immutable")
        self.storage.check_writable()

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> AttachRequest:
        version = get_version(args)
        ttl = args.get("ttl")
        return cls(
            name=get_str(args, "name") or "",
            storage=DatastoreSpec.from_dict(
                {k: v for k, v in args.items() if k not in ATTACH_FIELDS}
            ),
            version=version,
            immutable=get_bool(args, "immutable", version is not None),
            ttl=None if ttl is None else get_number(args, "ttl", 0.0),
            owner=get_id(args, "owner"),
            shared=get_optional_bool(args, "shared"),
            uid=get_id(args, "uid"),
            gid=get_id(args, "gid"),
            file_mode=get_mode(args, "file_mode"),
            dir_mode=get_mode(args, "dir_mode"),
            manifest=get_str(args, "manifest", required=False) or None,
            read_write=get_bool(args, "read_write"),
        )

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}" if self.version is not None else self.name

    @property
    def overrides(self) -> dict[str, int]:
        """The presentation overrides given (root only)."""
        return {k: v for k in OVERRIDES if (v := getattr(self, k)) is not None}

    @property
    def effective_owner(self) -> int:
        return 0 if self.owner is None else self.owner

    @property
    def effective_shared(self) -> bool:
        return self.effective_owner == 0 if self.shared is None else self.shared

    def to_dict(self, *, secrets: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, **self.storage.to_dict(secrets=secrets)}
        if self.version is not None:
            out["version"] = self.version
        out["immutable"] = self.immutable
        if self.ttl is not None:
            out["ttl"] = self.ttl
        if self.owner is not None:
            out["owner"] = self.owner
        if self.shared is not None:
            out["shared"] = self.shared
        for key, value in self.overrides.items():
            out[key] = f"{value:04o}" if key.endswith("_mode") else value
        if self.manifest is not None:
            out["manifest"] = self.manifest
        if self.read_write:
            out["read_write"] = True
        return out
