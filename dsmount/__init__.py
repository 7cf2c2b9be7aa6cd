"""dsmount: datastores (Azure blob containers, file shares, local directories) as one POSIX tree.

The packages and what each may import (tests/unit/test_layering.py enforces it):

- `storage`   one interface per storage kind (ranged reads for the mount, whole-file transfers),
              one spec, one factory, one retry policy. Imports only `errors` and `shared`.
- `node`      the compute-node side: daemon, FUSE adapter, filesystem core, caches. Imports
              `storage`, `control`, `shared`, `errors`; never `workspace` or `cli`.
- `workspace` the registry of named datastores, versions, transfers, the run wrapper, the Python
              API. Imports `storage`, `shared`, `errors` and `control.client` (the only way it
              reaches a daemon); never `node`.
- `control`   the door between the two, transport only: protocol (plain data), client, server
              (socket, peer credentials, limits), a dispatcher over a table of handlers the
              node gives it. Imports `storage`, `shared`, `errors`; never `node` or
              `workspace` (a floor below both).
- `cli`       the command line, one module per side; imports anything above it.
- `shared`    credentials, secret references, logging, file helpers. Imports only `errors`.
"""
