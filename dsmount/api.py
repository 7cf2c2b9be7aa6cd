"""The public Python API (`from dsmount.api import Workspace, Datastore, DataTypeIds, hint,
HintingSampler`).

The implementation lives in `dsmount.workspace.api` and `dsmount.workspace.datasets`; this
module is the stable import path.
"""

from dsmount.workspace.api import DataReference, Datastore, Workspace
from dsmount.workspace.datasets import (
    Dataset,
    DatasetConflict,
    DatasetNotFound,
    Datasets,
    DataTypeIds,
)
from dsmount.workspace.hinting import cancel as cancel_hint
from dsmount.workspace.hinting import hint
from dsmount.workspace.sampler import HintingSampler

__all__ = [
    "DataReference",
    "DataTypeIds",
    "Dataset",
    "DatasetConflict",
    "DatasetNotFound",
    "Datasets",
    "Datastore",
    "HintingSampler",
    "Workspace",
    "cancel_hint",
    "hint",
]
