"""Storage: every datastore kind behind one interface, used by the mount and the transfers alike.

- `spec`      the typed `DatastoreSpec` (validated once) that names a datastore;
- `factory`   builds the async backend (`Backend`, for the mount) or the blocking store
              (`Store`, for upload/download) of a spec;
- `retry`     the one retry policy every storage call runs under;
- `base`      the async interface; `store` the blocking one; `names` the naming rules;
- `local`, `memory` (tests, fault injection), `azure/` (blob containers, file shares).

May import only `dsmount.errors` and `dsmount.shared`: nothing of the node or the workspace.
"""
