"""The public Python API (`from dsmount.api import Workspace, Datastore`).

The implementation lives in `dsmount.workspace.api`; this module is the stable import path.
"""

from dsmount.workspace.api import DataReference, Datastore, Workspace

__all__ = ["DataReference", "Datastore", "Workspace"]
