"""A scale-out Airflow on this machine, without Docker: the services of docker-compose.yml as
plain processes (api-server, scheduler, dag-processor, two Celery workers, an MLflow server),
on the PostgreSQL and Redis that already run here.

Each test session gets its own databases (dropped and recreated), its own Redis DB number and
its own LMCHAIN_HOME, so it never sees another run's state. Every process is started in its own
session and its whole process group is killed at the end (task processes and DeepSpeed ranks
included).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import subprocess_env
from lmchain import airflow_env
from lmchain.netutil import free_port

BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, os.environ.get("LMCHAIN_CI_PGUSER", "postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 12  # a DB number no other part of lmchain uses, flushed per session
AIRFLOW_DB, MLFLOW_DB = "lmchain_airflow_ci", "lmchain_mlflow_ci"
QUEUES = {"default-worker": "default", "gpu-worker": "gpu"}


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def missing_services() -> str | None:
    """Why the scale-out stack cannot start here, or None."""
    if not reachable(PG_HOST, PG_PORT):
        return f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}"
    if not reachable(REDIS_HOST, REDIS_PORT):
        return f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}"
    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError:
        return "apache-airflow-providers-celery is not installed (make setup installs it)"
    return None


def _twelve_hours_away() -> str:
    now = time.gmtime()
    return f"{now.tm_min} {(now.tm_hour + 12) % 24} * * *"


def recreate_databases(*names: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def flush_redis_db() -> None:
    import redis

    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB).flushdb()


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    api_url: str
    mlflow_url: str
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = open(self.logs / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(cmd, env={**self.env, **(extra_env or {})}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home)

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.is_file() else ""

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"scale-out services exited: {dead}\n" +
                               "\n".join(f"--- {n}.log\n{self.log(n)}" for n in dead))

    def wait_http(self, url: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if httpx.get(url, timeout=3).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not up in {timeout}s")
            time.sleep(1)

    def api(self) -> httpx.Client:
        """A REST API client with a JWT from /auth/token (the simple auth manager, all users admin)."""
        token = httpx.get(self.api_url + "/auth/token", timeout=30).json()["access_token"]
        return httpx.Client(base_url=self.api_url + "/api/v2", headers={"Authorization": f"Bearer {token}"},
                            timeout=60)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for name, p in self.procs.items():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            # Task processes and DeepSpeed ranks live in the workers' process groups: make sure
            # none outlives its worker.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_stack(root: Path) -> Stack:
    """Start every service and wait until the api-server and the MLflow server answer."""
    recreate_databases(AIRFLOW_DB, MLFLOW_DB)
    flush_redis_db()
    home, logs = root / "home", root / "logs"
    home.mkdir(parents=True)
    logs.mkdir()
    api_port, mlflow_port = free_port(), free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    env = {
        **subprocess_env(home),
        **airflow_env.airflow_env(home),
        **airflow_env.scaleout_env(
            airflow_db=f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{AIRFLOW_DB}",
            broker=f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            mlflow_uri=mlflow_url, secret=secrets.token_hex(32)),
        **airflow_env.api_port_env(api_port),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Seven Airflow processes share two cores here: give the task processes' calls to the
        # execution API more than the default 5 s before they count as failed.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        # DAGs stay paused at creation (Airflow's default): the test unpauses only the pipeline, so
        # the feedback DAG's half-hourly schedule never starts a run here. The nightly schedule is
        # moved 12 hours away from now, so no scheduled run (a full demo) can start during the test.
        "LMCHAIN_PIPELINE_SCHEDULE": _twelve_hours_away(),
    }
    stack = Stack(home, env, f"http://127.0.0.1:{api_port}", mlflow_url, logs)
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True,
                             timeout=600)
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {migrate.stderr[-3000:]}")
    try:
        stack.start("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                               "--workers", "1",
                               "--backend-store-uri", f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{MLFLOW_DB}",
                               "--artifacts-destination", str(root / "mlflow-artifacts")],
                    # Its job runner (GenAI evaluation jobs, a pool of huey consumers) is not used here.
                    {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        stack.start("api-server", [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port",
                                   str(api_port), "--workers", "1"])
        stack.start("scheduler", [str(BIN / "airflow"), "scheduler"])
        stack.start("dag-processor", [str(BIN / "airflow"), "dag-processor"])
        for name, queue in QUEUES.items():
            # Each worker serves its task logs on a port of its own (Airflow's default 8793 is
            # one port per host).
            stack.start(name, [str(BIN / "airflow"), "celery", "worker", "--queues", queue, "--concurrency", "1",
                               "--celery-hostname", f"{name}@%h"],
                        {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())})
        stack.wait_http(stack.api_url + "/api/v2/monitor/health")
        stack.wait_http(mlflow_url + "/health")
    except BaseException:
        stack.stop()
        raise
    return stack


def wait_for_dag(api: httpx.Client, stack: Stack, dag_id: str, timeout: float = 240) -> None:
    """Until the dag-processor has parsed ``dag_id`` into the database."""
    deadline = time.monotonic() + timeout
    while api.get(f"/dags/{dag_id}").status_code != 200:
        stack.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id} not parsed in {timeout}s:\n{stack.log('dag-processor')}")
        time.sleep(2)


def unpause(api: httpx.Client, dag_id: str) -> None:
    resp = api.patch(f"/dags/{dag_id}", json={"is_paused": False})
    resp.raise_for_status()


def wait_for_run(api: httpx.Client, stack: Stack, dag_id: str, run_id: str, timeout: float = 1800) -> dict:
    """Poll the run until it ends; returns the run as the REST API shows it."""
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()
        if run["state"] in ("success", "failed"):
            return run
        stack.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} still {run['state']} after {timeout}s; "
                               f"tasks: {task_states(api, dag_id, run_id)}")
        time.sleep(3)


def task_instances(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, dict]:
    body = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
    return {ti["task_id"]: ti for ti in body["task_instances"]}


def task_states(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, str]:
    return {t: ti["state"] for t, ti in task_instances(api, dag_id, run_id).items()}
