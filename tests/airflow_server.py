"""A real Airflow api-server on 127.0.0.1 with a home of its own (AIRFLOW_HOME, SQLite DB,
LMCHAIN_HOME), for tests of what the api-server serves and who it lets in."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from conftest import subprocess_env
from lmchain import airflow_env
from lmchain.netutil import free_port

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


@dataclass
class ApiServer:
    base: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path

    def airflow(self, *args: str, extra_env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([AIRFLOW, *args], env={**self.env, **(extra_env or {})}, capture_output=True,
                              text=True, timeout=300, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def prepare(root: Path, extra_env: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
    """A fresh home and its migrated DB; returns (LMCHAIN_HOME, the environment to run Airflow with)."""
    home = root / "home"
    home.mkdir(parents=True)
    env = {**subprocess_env(home), **airflow_env.airflow_env(home),
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
           "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32), **(extra_env or {})}
    (home / "airflow").mkdir()
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return home, env


def start(root: Path, home: Path, env: dict[str, str], timeout: float = 180) -> ApiServer:
    port = free_port("127.0.0.1")
    env = {**env, **airflow_env.api_port_env(port)}
    log = root / "api-server.log"
    proc = subprocess.Popen([AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    server = ApiServer(f"http://127.0.0.1:{port}", home, env, proc, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"api-server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(server.base + "/api/v2/monitor/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"api-server not up in {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
