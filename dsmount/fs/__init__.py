"""The FUSE-free filesystem core: namespace of attached datastores, inodes, handles, reads."""
