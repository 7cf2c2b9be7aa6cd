"""Azure Blob Storage and Azure Files: one target resolution, one error map, one client setup.

`common` resolves where a datastore lives (account, endpoint, credential) and maps every SDK or
HTTP failure to `dsmount.errors`; `bridge` runs the asyncio SDK on one loop thread for trio;
`backend`/`blob`/`fileshare` are the async faces (ranged reads), `store`/`blob_store`/
`fileshare_store` the blocking ones (whole-file transfers).
"""
