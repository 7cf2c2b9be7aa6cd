"""Helpers both sides use: credentials and secret references, logging, atomic file writes.
Imports only `dsmount.errors`."""
