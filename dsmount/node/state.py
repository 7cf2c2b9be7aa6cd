"""The attached-datastore state, persisted so a restarted daemon restores the same tree.

Two files in the state directory (mode 0700):
- `attached.json`: one spec per attached datastore, secrets removed (readable for support);
- `secrets.json` (0600): the secrets those specs referenced, by key.
Both are written atomically (temp file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from dsmount.shared.fileutil import atomic_write

log = logging.getLogger(__name__)

STATE_FILE = "attached.json"
SECRETS_FILE = "secrets.json"


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def save(self, specs: dict[str, dict[str, Any]]) -> None:
        public: list[dict[str, Any]] = []
        secrets: dict[str, str] = {}
        for key, spec in sorted(specs.items()):
            spec = dict(spec)
            auth = spec.get("auth")
            if isinstance(auth, dict) and "secret" in auth:
                auth = dict(auth)
                secrets[key] = auth.pop("secret")
                auth["secret_ref"] = key
                spec["auth"] = auth
            public.append(spec)
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.dir, 0o700)
            atomic_write(self.dir / SECRETS_FILE, json.dumps(secrets).encode(), 0o600)
            atomic_write(self.dir / STATE_FILE, json.dumps(public, indent=1).encode(), 0o600)
        except OSError as e:
            log.error("cannot persist attached datastores in %s: %s", self.dir, e)

    def load(self) -> list[dict[str, Any]]:
        path = self.dir / STATE_FILE
        if not path.exists():
            return []
        try:
            specs = json.loads(path.read_text())
            secrets_path = self.dir / SECRETS_FILE
            secrets = json.loads(secrets_path.read_text()) if secrets_path.exists() else {}
        except (OSError, json.JSONDecodeError) as e:
            log.error("cannot read saved state %s: %s; starting empty", path, e)
            return []
        out = []
        for spec in specs if isinstance(specs, list) else []:
            if not isinstance(spec, dict):
                continue
            auth = spec.get("auth")
            if isinstance(auth, dict) and "secret_ref" in auth:
                auth = dict(auth)
                ref = auth.pop("secret_ref")
                if ref in secrets:
                    auth["secret"] = secrets[ref]
                spec["auth"] = auth
            out.append(spec)
        return out
