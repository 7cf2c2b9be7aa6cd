"""Storage: every datastore kind behind one interface, used by the mount and the transfers alike.

- `spec`      the typed `DatastoreSpec` (validated once) that names a datastore;
- `factory`   builds the async backend (`Backend`, for the mount) or the blocking store
              (`Store`, for upload/download) of a spec;
- `retry`     the one retry policy every storage call runs under;
- `base`      the async interface (`Backend`, its `Upload`, its `Capabilities`); `store` the
              blocking one (transfers); `names` the naming rules; `writes` staged-write names;
- `local` (local directories, read-only), `manifest_backend` (a version served from its
  manifest), `azure/` (blob containers, file shares). The test doubles (a memory backend, a
  fault-injecting wrapper) live in tests/support/.

May import only `dsmount.errors` and `dsmount.shared`: nothing of the node or the workspace.
"""
