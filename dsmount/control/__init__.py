"""The control socket, transport only: a JSON-lines protocol (plain data), peer credentials, a
thin server that dispatches to a table of handlers given to it, and a client. Never imports
`dsmount.node` or `dsmount.workspace`: both stand on it."""
