"""The FUSE-free filesystem core: namespace of attached datastores, attributes and lookups,
directory handles, and the read path. Raises `dsmount.errors` only; knows no errno numbers."""
