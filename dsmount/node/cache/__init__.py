"""Caches under the filesystem: the block cache (one byte budget), the fetcher that fills it,
the read-ahead policy and the optional disk cache. Knows storage, never `node.fs`."""
