"""The namespace: which datastores are attached, and under which names.

The root holds one directory per attached datastore (NAME), or a virtual directory NAME
holding one directory per attached version (NAME/VERSION). A name is either attached without
a version or by versions, never both. Pure bookkeeping: no I/O, no kernel, no caches.
"""

from __future__ import annotations

import logging

from dsmount.errors import AlreadyExists, InvalidRequest, NotFound
from dsmount.node.fs.datastore import Datastore

log = logging.getLogger(__name__)

NAME_MAX = 255


def check_name(name: str, what: str = "datastore name") -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidRequest(f"invalid {what} {name!r}")
    if len(name.encode()) > NAME_MAX:
        raise InvalidRequest(f"{what} longer than {NAME_MAX} bytes")


class Namespace:
    def __init__(self) -> None:
        self._top: dict[str, Datastore | dict[str, Datastore]] = {}

    def names(self) -> list[str]:
        """The root's entries."""
        return sorted(self._top)

    def item(self, name: str) -> Datastore | dict[str, Datastore] | None:
        """What the root's entry `name` is: a datastore, a {version: datastore} dict, or None."""
        return self._top.get(name)

    def datastores(self) -> list[Datastore]:
        out: list[Datastore] = []
        for item in self._top.values():
            out.extend(item.values() if isinstance(item, dict) else [item])
        return sorted(out, key=lambda d: d.key)

    def find(self, name: str, version: str | None = None) -> Datastore:
        item = self._top.get(name)
        if isinstance(item, dict):
            if version is None:
                raise NotFound(
                    f"datastore {name!r} is attached by version ({', '.join(sorted(item))}); "
                    "name one"
                )
            ds = item.get(version)
            if ds is None:
                raise NotFound(f"datastore {name!r} version {version} is not attached")
            return ds
        if item is None or version is not None:
            what = f"{name!r} version {version}" if version else repr(name)
            raise NotFound(f"datastore {what} is not attached")
        return item

    def add(self, ds: Datastore) -> None:
        check_name(ds.name)
        if ds.version is not None:
            check_name(ds.version, "version")
        item = self._top.get(ds.name)
        if ds.version is None:
            if item is not None:
                raise AlreadyExists(f"a datastore named {ds.name!r} is already attached")
            self._top[ds.name] = ds
        else:
            if isinstance(item, Datastore):
                raise AlreadyExists(
                    f"{ds.name!r} is attached without a version; detach it first"
                )
            versions = self._top.setdefault(ds.name, {})
            assert isinstance(versions, dict)
            if ds.version in versions:
                raise AlreadyExists(f"{ds.name!r} version {ds.version} is already attached")
            versions[ds.version] = ds
        log.info("[%s] attached (%s)", ds.key, ds.backend.kind)

    def remove(self, ds: Datastore) -> bool:
        """Take `ds` out of the tree. True if that emptied its NAME (a versions directory that
        is gone too), so the caller invalidates the kernel's entry for NAME as well."""
        item = self._top[ds.name]
        if isinstance(item, dict):
            del item[ds.version]  # type: ignore[arg-type]
            if not item:
                del self._top[ds.name]
                return True
            return False
        del self._top[ds.name]
        return True
