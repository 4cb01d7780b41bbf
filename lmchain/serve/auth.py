"""API keys for the service: only SHA-256 hashes are stored, in a file or an environment variable.

A key is a random URL-safe token that the client sends as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``. The service keeps ``sha256:<hex>`` lines, so a leaked key file or
environment dump does not leak usable keys. ``lmchain serve --new-api-key`` prints a fresh pair.

Two key sets: API keys (predict, feedback) and admin keys (``/v1/admin/*``), so the key handed
to every client cannot also swap models. A service without API keys is open; it may start so
only on a loopback host, unless the deployer says ``--insecure-open`` (:func:`check_exposure`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from lmchain.errors import ConfigError

ENV_HASHES = "LMCHAIN_API_KEY_HASHES"
ENV_ADMIN_HASHES = "LMCHAIN_ADMIN_KEY_HASHES"
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
            raise ConfigError(
                f"{where}: {entry[:20]!r}... is not a 'sha256:<64 hex digits>' key hash "
                "(store hashes, not keys; `lmchain serve --new-api-key` prints one)"
            )
        hashes.add(PREFIX + hexpart.lower())
    return hashes


class ApiKeys:
    def __init__(self, hashes: set[str]):
        self.hashes = hashes

    @classmethod
    def load(
        cls, keys_file: str | None, env: str = ENV_HASHES, setting: str = "deploy.service.api_keys_file"
    ) -> "ApiKeys":
        hashes = _parse(os.environ.get(env, "").split(","), env)
        if keys_file:
            path = Path(keys_file)
            if not path.is_file():
                raise ConfigError(f"key file {path} does not exist ({setting})")
            hashes |= _parse(path.read_text().splitlines(), str(path))
        return cls(hashes)

    @classmethod
    def load_admin(cls, keys_file: str | None) -> "ApiKeys":
        return cls.load(keys_file, ENV_ADMIN_HASHES, "deploy.service.admin_keys_file")

    @property
    def enabled(self) -> bool:
        return bool(self.hashes)

    def allows(self, presented: str | None) -> bool:
        if not self.enabled:
            return True
        return self.knows(presented)

    def knows(self, presented: str | None) -> bool:
        """True only for a key in this set (an empty set knows none)."""
        if not presented:
            return False
        digest = hash_key(presented)
        # Constant-time comparison against every hash: timing reveals nothing about near-misses.
        return any([hmac.compare_digest(digest, h) for h in self.hashes])


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and 'localhost'; anything else (0.0.0.0, ::, a name, an address) is exposed."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: ApiKeys, insecure_open: bool) -> None:
    """Refuse an open service on a reachable address: an API without keys must be a choice."""
    if keys.enabled or insecure_open or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host} without API keys: anyone who can reach it could use the model and "
        "post feedback that becomes training labels. Make a key with `lmchain serve --new-api-key`, put its "
        f"hash in {ENV_HASHES} or a file named by deploy.service.api_keys_file (--api-keys-file), and "
        "give the key to clients; or bind to 127.0.0.1; or, to run open on purpose, pass --insecure-open "
        "(deploy.service.insecure_open=true)"
    )
