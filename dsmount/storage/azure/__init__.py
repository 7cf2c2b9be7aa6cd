"""Azure Blob Storage and Azure Files, split by layer.

- `common`: where a datastore lives (account, endpoint, credential), THE error map, the SDK
  pipeline setup; `bridge`: the asyncio loop thread the SDK runs on, awaited from trio;
- `blob_client` / `fileshare_client`: the REST client of one container / one share (every
  request, run on the asyncio loop; nothing retried there);
- `backend`: what both backends share (the retried, bridged, error-mapped call);
  `blob` / `fileshare`: the backends, composing their REST client, with their upload objects
  in `blob_upload` / `fileshare_upload`; `blob_listing` / `fileshare_listing`: the parsers.
"""
