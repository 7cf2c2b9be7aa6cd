"""Run the Azure Files emulator standalone: `python -m tests.support.azurefiles --port 10004`.

Prints the connection string on stdout (one line, flushed) once listening, then serves until
interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import DEVSTORE_KEY, AzureFilesEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.azurefiles")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=10004, help="0 picks a free port")
    parser.add_argument("--account", default="devstoreaccount1")
    parser.add_argument("--key", default=DEVSTORE_KEY, help="base64 account key")
    parser.add_argument("--bearer-token", default=None, help="accepted Azure AD bearer token")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (self-signed)")
    args = parser.parse_args(argv)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    emulator = AzureFilesEmulator(
        account=args.account,
        key=args.key,
        host=args.host,
        port=args.port,
        bearer_token=args.bearer_token,
        tls=args.tls,
    )
    with emulator:
        print(emulator.connection_string, flush=True)
        if emulator.ca_cert_path is not None:
            print(f"# CA certificate: {emulator.ca_cert_path}", file=sys.stderr, flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
