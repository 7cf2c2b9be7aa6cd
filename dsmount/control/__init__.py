"""The control socket: a JSON-lines protocol (plain data), a thin server and a client."""
