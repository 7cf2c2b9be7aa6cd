"""The compute-node side: the daemon that mounts `/datastores` and serves it.

Data flows one way: FUSE request -> `fuse_adapter` -> `fs` -> `cache` (fetcher) -> `storage`.
Control flows: control server -> `ops` (the table of operations; `attach`, `status_ops`, with
`access` the pure who-may-what rules) -> `fs`.
`fuse_adapter` is the only module that imports pyfuse3; `cache` never imports `fs`; nothing
here imports `dsmount.workspace` or `dsmount.cli`.
"""
