"""The public Python API (`from dsmount.api import Workspace, Datastore, hint, HintingSampler`).

The implementation lives in `dsmount.workspace.api`; this module is the stable import path.
"""

from dsmount.workspace.api import DataReference, Datastore, Workspace
from dsmount.workspace.hinting import cancel as cancel_hint
from dsmount.workspace.hinting import hint
from dsmount.workspace.sampler import HintingSampler

__all__ = ["DataReference", "Datastore", "HintingSampler", "Workspace", "cancel_hint", "hint"]
