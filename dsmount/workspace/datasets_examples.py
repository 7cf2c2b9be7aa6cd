"""The example datasets: small tables shipped in the package (`dsmount/workspace/examples/`),
listed by `examples/index.json`, read offline exactly like user datasets.

Invariants: examples are read-only; their family ids start with "example-" and never clash
with a user dataset's (a uuid4 hex); an example's version is 0 and its id "<family_id>.0".
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from dsmount.errors import ConfigError
from dsmount.workspace.datasets_catalog import Entry

_PACKAGE = "dsmount.workspace"
_DIR = "examples"


def _root() -> Path:
    return Path(str(resources.files(_PACKAGE).joinpath(_DIR)))


def example_entries() -> list[Entry]:
    """The examples, in the order of the index."""
    root = _root()
    try:
        index = json.loads((root / "index.json").read_text())
        return [
            Entry(
                family_id=d["family_id"], id=f"{d['family_id']}.0", name=d["name"],
                description=d["description"], data_type_id=d["data_type_id"],
                created_date=d["created_date"], size=(root / d["file"]).stat().st_size,
                version=0, object=d["file"],
            )  # fmt: skip
            for d in index
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the example datasets in {root} are damaged ({e})") from None


def example_file(entry: Entry) -> Path:
    """The local file holding an example's data."""
    return _root() / entry.object
