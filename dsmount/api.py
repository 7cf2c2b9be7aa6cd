"""The public Python API (`from dsmount.api import Workspace, Datastore, DataTypeIds`).

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

__all__ = [
    "DataReference",
    "DataTypeIds",
    "Dataset",
    "DatasetConflict",
    "DatasetNotFound",
    "Datasets",
    "Datastore",
    "Workspace",
]
