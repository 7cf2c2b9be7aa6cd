"""The compute-node side: the daemon that mounts `/datastores` and serves it.

Data flows one way: FUSE request -> `fuse_adapter` -> `fs` -> `cache` (fetcher) -> `storage`.
`fuse_adapter` is the only module that imports pyfuse3; `cache` never imports `fs`; nothing
here imports `dsmount.workspace` or `dsmount.cli`.
"""
