"""The workspace side: the registry of named datastores with versions, upload/download, the
`dsmount run` wrapper, named datasets and the Python API. Reaches storage through
`dsmount.storage` and a daemon only through `dsmount.control.client`; never imports
`dsmount.node`."""
