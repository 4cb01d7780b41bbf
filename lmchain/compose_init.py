"""Start-up checks and one-time setup of the docker-compose deployment.

Every lmchain container starts through ``python -m lmchain.compose_init exec -- <command>``: the
secrets it was given (and the passwords inside its database URLs) are checked before the command
runs, so a placeholder, a known default or a too-short value stops the container with a message
that names the .env variable to set. Compose itself refuses empty ones (``${VAR:?}``).

  exec -- CMD...            check this container's secrets, then run CMD
  check                     only the check (exit status 2 on a problem)
  airflow-admin             create the Airflow (FAB) admin from AIRFLOW_ADMIN_USERNAME/PASSWORD,
                            or reset its password to AIRFLOW_ADMIN_PASSWORD when it changed
  mlflow-server -- CMD...   write MLflow's basic-auth config (mode 0600), create or update the
                            admin and the service's read-only user, then run CMD (mlflow server)

Only the standard library and, for the two setup commands, Airflow's FAB provider or MLflow's
auth store are imported: the check runs in every container at every start.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Container variable -> (the .env variable it comes from, what it is, minimum length).
SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": ("AIRFLOW_JWT_SECRET", "the key that signs Airflow's JWTs", 32),
    "AIRFLOW__API__SECRET_KEY": ("AIRFLOW_API_SECRET_KEY", "Airflow's session and log-server key", 32),
    "AIRFLOW__CORE__FERNET_KEY": ("AIRFLOW_FERNET_KEY", "the Fernet key of Airflow's stored secrets", 0),
    "AIRFLOW_ADMIN_PASSWORD": ("AIRFLOW_ADMIN_PASSWORD", "the Airflow admin's password", 16),
    "MLFLOW_AUTH_ADMIN_PASSWORD": ("MLFLOW_ADMIN_PASSWORD", "the MLflow admin's password", 16),
    "MLFLOW_SERVE_PASSWORD": ("MLFLOW_SERVE_PASSWORD", "the service's MLflow password", 16),
    "MLFLOW_FLASK_SERVER_SECRET_KEY": ("MLFLOW_FLASK_SECRET_KEY", "MLflow's session and CSRF key", 32),
    "MLFLOW_TRACKING_PASSWORD": (
        "MLFLOW_ADMIN_PASSWORD or MLFLOW_SERVE_PASSWORD",
        "this container's MLflow password",
        16,
    ),
    "LMCHAIN_DEPLOY_KEY": ("LMCHAIN_DEPLOY_KEY", "the key of the deploy stage's validation tags", 32),
}
# Container variable holding a database URL -> the .env variable of the password inside it.
URL_PASSWORDS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "POSTGRES_PASSWORD",
    "AIRFLOW__CELERY__RESULT_BACKEND": "CELERY_DB_PASSWORD",
    "MLFLOW_BACKEND_STORE_URI": "MLFLOW_DB_PASSWORD",
    "MLFLOW_AUTH_DATABASE_URI": "MLFLOW_DB_PASSWORD",
}
URL_PASSWORD_MIN = 16
# Defaults that older lmchain compose files, Airflow's and MLflow's examples shipped.
KNOWN_DEFAULTS = {
    "airflow",
    "admin",
    "password",
    "password1234",
    "postgres",
    "mlflow",
    "secret",
    "changeme",
    "change-me",
    "change-me-to-a-long-random-string",
    "example",
    "test",
}
PLACEHOLDER_MARKS = ("change-me", "changeme", "replace-me", "placeholder", "<")
GENERATE = {
    "AIRFLOW_FERNET_KEY": 'python -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"',
}
DEFAULT_GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
HINT = "python docker/make-env.py writes a .env with fresh secrets"


class SecretProblem(Exception):
    pass


def _weakness(value: str, min_length: int) -> str | None:
    low = value.strip().lower()
    if not low:
        return "is empty"
    if low in KNOWN_DEFAULTS or any(mark in low for mark in PLACEHOLDER_MARKS):
        return "is a placeholder or a published default"
    if len(value) < min_length:
        return f"is too short ({len(value)} characters; at least {min_length})"
    return None


def _fernet_problem(value: str) -> str | None:
    """None for a Fernet key, or Airflow's "new,old" list of them while rotating."""
    for key in value.split(","):
        try:
            raw = base64.urlsafe_b64decode(key.strip().encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            return "is not a Fernet key (32 url-safe base64-encoded bytes; several while rotating: new,old)"
    return None


def problems(env: dict[str, str]) -> list[str]:
    """What is wrong with the secrets present in ``env`` (empty: all good)."""
    found = []
    for var, (source, what, min_length) in SECRETS.items():
        if var not in env:
            continue  # this container was not given it
        value = env[var]
        why = _fernet_problem(value) if var == "AIRFLOW__CORE__FERNET_KEY" else _weakness(value, min_length)
        if why:
            how = GENERATE.get(source, DEFAULT_GENERATE)
            found.append(f"{source} ({what}) {why}: set it in .env, e.g. from `{how}`")
    for var, source in URL_PASSWORDS.items():
        if var not in env or "://" not in env[var]:
            continue
        url = env[var].split("+", 1)[-1] if env[var].startswith("db+") else env[var]
        password = unquote(urlsplit(url).password or "")
        if urlsplit(url).scheme.startswith("sqlite"):
            continue  # a file on this machine: no password to check
        why = _weakness(password, URL_PASSWORD_MIN)
        if why:
            found.append(f"{source} (the password in {var}) {why}: set it in .env, e.g. from `{DEFAULT_GENERATE}`")
    return found


def check(env: dict[str, str] | None = None) -> None:
    found = problems(dict(os.environ) if env is None else env)
    if found:
        raise SecretProblem("refusing to start: " + "; ".join(found) + f" ({HINT})")


# --------------------------------------------------------------------------- Airflow (FAB) admin


def sync_airflow_admin(env: dict[str, str]) -> str:
    """Create the FAB admin, or reset its password when AIRFLOW_ADMIN_PASSWORD changed."""
    from werkzeug.security import check_password_hash

    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    username = env.get("AIRFLOW_ADMIN_USERNAME") or "admin"
    password = env.get("AIRFLOW_ADMIN_PASSWORD")
    if not password:
        raise SecretProblem(
            f"AIRFLOW_ADMIN_PASSWORD is not set: the Airflow admin needs a password (`{DEFAULT_GENERATE}`)"
        )
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        user = sm.find_user(username=username)
        if user is None:
            role = sm.find_role("Admin")
            email = env.get("AIRFLOW_ADMIN_EMAIL") or f"{username}@localhost"
            if role is None or not sm.add_user(username, "lmchain", "admin", email, role, password):
                raise SecretProblem(f"could not create the Airflow admin {username!r} (see the log above)")
            return f"created Airflow admin {username!r}"
        if check_password_hash(user.password, password):
            return f"Airflow admin {username!r} exists; password unchanged"
        sm.reset_password(user.id, password)
        return f"Airflow admin {username!r}: password reset to AIRFLOW_ADMIN_PASSWORD"


# --------------------------------------------------------------------------- MLflow basic-auth


def write_mlflow_auth_config(folder: Path, database_uri: str, admin_username: str) -> Path:
    """MLflow's basic-auth ini (it holds the auth DB URL, so: mode 0600 in a 0700 folder)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "basic_auth.ini"
    # configparser interpolates '%': a URL-encoded password must be written as '%%'.
    text = (
        "[mlflow]\n"
        "# Any logged-in user may read; only the admin (the pipeline) writes.\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    return path


def sync_mlflow_users(database_uri: str, users: list[tuple[str, str, bool]]) -> list[str]:
    """Create each (username, password, is_admin) in MLflow's auth store, or update its password."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)
    done = []
    for username, password, is_admin in users:
        if not store.has_user(username, use_primary=True):
            store.create_user(username, password, is_admin=is_admin)
            done.append(f"created MLflow user {username!r}")
        elif not store.authenticate_user(username, password, use_primary=True):
            store.update_user(username, password=password, is_admin=is_admin)
            done.append(f"MLflow user {username!r}: password updated")
    return done


def prepare_mlflow(env: dict[str, str]) -> dict[str, str]:
    """The environment to run ``mlflow server --app-name basic-auth`` with, users in place."""
    database_uri = env.get("MLFLOW_AUTH_DATABASE_URI")
    if not database_uri:
        raise SecretProblem("MLFLOW_AUTH_DATABASE_URI is not set: MLflow's basic-auth app needs a user store")
    admin = env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    users = [(admin, env.get("MLFLOW_AUTH_ADMIN_PASSWORD", ""), True)]
    if env.get("MLFLOW_SERVE_PASSWORD"):
        users.append((env.get("MLFLOW_SERVE_USERNAME") or "lmchain-serve", env["MLFLOW_SERVE_PASSWORD"], False))
    if not users[0][1]:
        raise SecretProblem(
            f"MLFLOW_ADMIN_PASSWORD is not set: the MLflow admin needs a password (`{DEFAULT_GENERATE}`)"
        )
    if not env.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        raise SecretProblem(
            "MLFLOW_FLASK_SECRET_KEY is not set: MLflow's basic-auth app signs its sessions and "
            f"CSRF tokens with it (`{DEFAULT_GENERATE}`)"
        )
    folder = Path(env.get("MLFLOW_AUTH_CONFIG_DIR") or tempfile.mkdtemp(prefix="mlflow-auth-"))
    config = write_mlflow_auth_config(folder, database_uri, admin)
    for line in sync_mlflow_users(database_uri, users):
        print(line, flush=True)
    return {**env, "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": admin}


# --------------------------------------------------------------------------- CLI


def _command(argv: list[str]) -> list[str]:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SecretProblem("give the command to run after `--`")
    return argv[argv.index("--") + 1 :]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    action = argv[0] if argv else ""
    try:
        if action not in ("check", "exec", "airflow-admin", "mlflow-server"):
            raise SecretProblem(
                "usage: python -m lmchain.compose_init {check|exec -- CMD|airflow-admin|mlflow-server -- CMD}"
            )
        check()
        env = dict(os.environ)
        if action == "check":
            return 0
        if action == "airflow-admin":
            print(sync_airflow_admin(env), flush=True)
            return 0
        cmd = _command(argv)
        if action == "mlflow-server":
            env = prepare_mlflow(env)
        sys.stdout.flush()
        os.execvpe(cmd[0], cmd, env)
    except SecretProblem as exc:
        print(f"lmchain: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"lmchain: cannot run {exc.filename}: not found", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
