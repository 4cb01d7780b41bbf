"""API keys for the service: only SHA-256 hashes are stored, in a file or an environment variable.

A key is a random URL-safe token that the client sends as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``. The service keeps ``sha256:<hex>`` lines, so a leaked key file or
environment dump does not leak usable keys. ``lmchain serve --new-api-key`` prints a fresh pair.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from lmchain.errors import ConfigError

ENV_HASHES = "LMCHAIN_API_KEY_HASHES"
PREFIX = "sha256:"


def hash_key(key: str) -> str:
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key, hash line) pair."""
    key = "lmk_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


def _parse(entries: list[str], where: str) -> set[str]:
    hashes = set()
    for raw in entries:
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        hexpart = entry.removeprefix(PREFIX)
        if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart.lower()):
            raise ConfigError(f"{where}: {entry[:20]!r}... is not a 'sha256:<64 hex digits>' key hash "
                              "(store hashes, not keys; `lmchain serve --new-api-key` prints one)")
        hashes.add(PREFIX + hexpart.lower())
    return hashes


class ApiKeys:
    def __init__(self, hashes: set[str]):
        self.hashes = hashes

    @classmethod
    def load(cls, keys_file: str | None) -> "ApiKeys":
        hashes = _parse(os.environ.get(ENV_HASHES, "").split(","), ENV_HASHES)
        if keys_file:
            path = Path(keys_file)
            if not path.is_file():
                raise ConfigError(f"API key file {path} does not exist (deploy.service.api_keys_file)")
            hashes |= _parse(path.read_text().splitlines(), str(path))
        return cls(hashes)

    @property
    def enabled(self) -> bool:
        return bool(self.hashes)

    def allows(self, presented: str | None) -> bool:
        if not self.enabled:
            return True
        if not presented:
            return False
        digest = hash_key(presented)
        # Constant-time comparison against every hash: timing reveals nothing about near-misses.
        return any([hmac.compare_digest(digest, h) for h in self.hashes])
