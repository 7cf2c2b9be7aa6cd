"""A protocol-faithful emulator of the Azure Files REST API subset dsmount uses (Azurite has no
File service). Drive it only through the unmodified azure-storage-file-share SDK or dsmount.

    with AzureFilesEmulator() as emu:
        svc = ShareServiceClient.from_connection_string(emu.connection_string)
        emu.faults.fail_next(2)   # inject 503 ServerBusy

Run standalone (for benchmarks): `python -m tests.support.azurefiles --port 10004`.
"""

from .faults import Faults
from .server import DEVSTORE_KEY, AzureFilesEmulator

__all__ = ["DEVSTORE_KEY", "AzureFilesEmulator", "Faults"]
