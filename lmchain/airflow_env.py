"""The environment that points Airflow, MLflow and GX at one lmchain home.

Values the user already exported win, so the scale-out path (PostgreSQL, Celery, an MLflow
server) is configured by environment variables alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lmchain.errors import LmchainError
from lmchain.home import HOME_ENV, TRACKING_URI_ENV, Home

REPO_ROOT = Path(__file__).resolve().parent.parent


def airflow_env(lm_home: Home | Path) -> dict[str, str]:
    lm_home = Home.of(lm_home)
    ah = lm_home.airflow
    return {
        HOME_ENV: str(lm_home.root),
        "AIRFLOW_HOME": str(ah),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{ah / 'airflow.db'}",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "GX_ANALYTICS_ENABLED": "False",
        TRACKING_URI_ENV: lm_home.tracking_uri,
        "TOKENIZERS_PARALLELISM": "false",
    }


def apply(lm_home: Home | Path) -> dict[str, str]:
    """Export the defaults into this process (without overriding the user's own values)."""
    lm_home = Home.of(lm_home)
    for key, value in airflow_env(lm_home).items():
        os.environ.setdefault(key, value)
    lm_home.airflow.mkdir(parents=True, exist_ok=True)
    lm_home.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return {k: os.environ[k] for k in airflow_env(lm_home)}


def api_port_env(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """The api-server's port, and the execution API URL that task processes call on it (Airflow
    defaults that URL to port 8080 whatever port the api-server listens on). ``host`` is the
    address the api-server binds: tasks reach a wildcard bind on loopback, any other at itself."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "", "localhost") else host
    if ":" in reach:
        reach = f"[{reach}]"  # an IPv6 literal in a URL
    return {
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{reach}:{port}/execution/",
    }


def airflow_cli() -> list[str]:
    return [str(Path(sys.executable).with_name("airflow"))]


def ensure_db(lm_home: Home | Path) -> None:
    """Create or upgrade the Airflow metadata DB (idempotent; skipped when it is current)."""
    stamp = Home.of(lm_home).airflow / ".db-migrated"
    db_url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if stamp.is_file() and stamp.read_text() == db_url:
        return
    proc = subprocess.run(airflow_cli() + ["db", "migrate"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LmchainError(f"`airflow db migrate` failed for {db_url}: {proc.stderr.strip()[-800:]}")
    stamp.write_text(db_url)


def scaleout_env(airflow_db: str, broker: str, mlflow_uri: str, secret: str) -> dict[str, str]:
    """Settings that move the same DAGs from the embedded default onto Airflow's distributed
    engine: PostgreSQL metadata DB, CeleryExecutor with a Redis broker, an MLflow server.

    ``airflow_db`` is a SQLAlchemy URL (postgresql+psycopg2://...), ``broker`` a Redis URL,
    ``mlflow_uri`` the tracking server's URL. ``secret`` must be the same for every component
    (api-server, scheduler, workers): tasks authenticate to the api-server with JWTs signed by it.
    docker-compose.yml sets the same variables.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__CELERY__BROKER_URL": broker,
        # Celery's result backend in the same database ("db+" prefix: Celery's SQLAlchemy backend;
        # keep "+psycopg2": SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not installed).
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
        # Tasks without a queue (every light stage) go to `default`; training asks for `gpu`.
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        # Airflow's Celery settings plus a fix that lets tasks run process pools (see the module).
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "lmchain.celery_config.CELERY_CONFIG",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__API__SECRET_KEY": secret,
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }
