"""The `dsmount` command line: `main` (the root group and node commands), `workspace`
(registry, transfers, run). Talks to the daemon only through `dsmount.control.client`."""
