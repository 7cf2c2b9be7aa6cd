"""Storage: every datastore kind behind one interface, used by the mount and the transfers alike.

- `spec`      the typed `DatastoreSpec` (validated once) that names a datastore;
- `factory`   builds the backend of a spec (`make_backend`, for the mount), or its whole files
              for blocking callers (`open_files`: upload, download, versions, the Python API);
- `retry`     the one retry policy every storage call runs under;
- `base`      THE interface (`Backend`, its `Upload`, its `Capabilities`), async, one
              implementation per kind; `files` the whole-file helpers written once over it, and
              `portal` the one way blocking code reaches it; `names` the naming rules; `writes`
              staged-write names;
- `local` (local directories; read-only for the mount, written by transfers through
  `local_upload`), `manifest_backend` (a version served from its
  manifest), `azure/` (blob containers, file shares). The test doubles (a memory backend, a
  fault-injecting wrapper) live in tests/support/.

May import only `dsmount.errors` and `dsmount.shared`: nothing of the node or the workspace.
"""
