#!/usr/bin/env python3
"""Write .env for docker-compose.yml from .env.example, with a fresh value for every empty secret.

    python docker/make-env.py [--out .env] [--force]

The file is created with mode 0600 (it holds every secret of the deployment). The service's API
key and admin key are printed once: .env keeps only their SHA-256 hashes, so store the keys now
(in the clients' secret store). Standard library only: it runs on the Docker host.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD", "POSTGRES_PASSWORD",
           "MLFLOW_DB_PASSWORD", "CELERY_DB_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SERVE_PASSWORD",
           "MLFLOW_FLASK_SECRET_KEY", "LMCHAIN_DEPLOY_KEY")
KEY_HASHES = {"LMCHAIN_API_KEY_HASHES": "service API key", "LMCHAIN_ADMIN_KEY_HASHES": "service admin key"}


def fresh_values() -> tuple[dict[str, str], dict[str, str]]:
    """(.env values, plaintext keys to show once)."""
    values = {name: secrets.token_urlsafe(32) for name in SECRETS}
    values["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    shown = {}
    for name, what in KEY_HASHES.items():
        key = "lmk_" + secrets.token_urlsafe(32)  # the format of `lmchain serve --new-api-key`
        values[name] = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        shown[what] = key
    return values, shown


def render(template: str, values: dict[str, str]) -> str:
    lines = []
    for line in template.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and name in values and not value.strip():
            line = f"{name}={values[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--example", default=str(ROOT / ".env.example"))
    p.add_argument("--out", default=str(ROOT / ".env"))
    p.add_argument("--force", action="store_true", help="replace an existing file (every secret changes!)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"{out} exists: keep it, or pass --force to replace every secret in it "
              "(README: Deploying safely, rotating secrets)", file=sys.stderr)
        return 2
    values, shown = fresh_values()
    text = render(Path(args.example).read_text(), values)
    if out.exists():
        out.unlink()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"wrote {out} (mode 0600)")
    for what, key in shown.items():
        print(f"{what}: {key}")
    print("Store the keys above now: .env holds only their hashes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
