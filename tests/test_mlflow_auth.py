"""MLflow as compose runs it: `mlflow server --app-name basic-auth`, started through
lmchain.compose_init (auth config, admin and the service's read-only user), on 127.0.0.1 with a
temporary SQLite backend and auth DB. Anonymous clients are refused; lmchain's registry client
works with the credentials from the environment; the service's user reads but cannot move
the champion."""

import os
import secrets
import signal
import stat
import subprocess
import sys
import time

import httpx
import pytest

from conftest import REPO, subprocess_env
from lmchain import registry
from lmchain.netutil import free_port

MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")
NAME = "lmchain-auth-test"


def init_cmd(*mlflow_args: str) -> list[str]:
    return [sys.executable, "-m", "lmchain.compose_init", "mlflow-server", "--", MLFLOW, "server",
            "--app-name", "basic-auth", *mlflow_args]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port("127.0.0.1")
    creds = {"admin": secrets.token_urlsafe(24), "lmchain-serve": secrets.token_urlsafe(24)}
    env = {**subprocess_env(root / "home"), "PYTHONPATH": str(REPO), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'auth.db'}", "MLFLOW_AUTH_CONFIG_DIR": str(root / "auth"),
           "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": creds["admin"],
           "MLFLOW_SERVE_USERNAME": "lmchain-serve", "MLFLOW_SERVE_PASSWORD": creds["lmchain-serve"],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32)}
    log = open(root / "mlflow.log", "w")
    proc = subprocess.Popen(init_cmd("--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                     "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                                     "--artifacts-destination", str(root / "artifacts")),
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, (root / "mlflow.log").read_text()[-3000:]
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "mlflow server not up in 180s"
        time.sleep(0.5)
    yield base, creds, root
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def as_user(server, monkeypatch):
    """Point lmchain's registry client at the server, logged in as the given user."""
    base, creds, _ = server

    def login(user: str | None):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(var, raising=False)
        if user:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", creds[user])
        return registry.client()

    yield login
    monkeypatch.undo()


@pytest.fixture(scope="module")
def champion_version(server):
    """A model version registered, tagged and made champion by the pipeline's (admin) login."""
    base, creds, _ = server
    env = {"MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": creds["admin"]}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        c = registry.client()
        exp = registry.experiment_id("lmchain-auth-test")
        run = c.create_run(exp)
        c.log_text(run.info.run_id, "weights", "model/weights.txt")  # through the authenticated artifact proxy
        c.create_registered_model(NAME)
        version = c.create_model_version(NAME, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version
        registry.mark_validated(NAME, version, pipeline_run="auth-test")
        c.set_registered_model_alias(NAME, "champion", version)
        assert str(registry.champion(NAME).version) == str(version)
        assert registry.validation_problem(NAME, version) is None
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return str(version)


def test_anonymous_and_wrong_password_clients_are_refused(server, champion_version):
    base, creds, _ = server
    api = base + "/api/2.0/mlflow"
    calls = [("post", "/registered-models/create", {"name": "intruder"}),
             ("post", "/registered-models/alias", {"name": NAME, "alias": "champion", "version": champion_version}),
             ("post", "/model-versions/create", {"name": NAME, "source": "/tmp/evil"}),
             ("get", "/registered-models/search", None),
             ("get", "/registered-models/alias?name=" + NAME + "&alias=champion", None)]
    for auth in (None, ("admin", "wrong-password-here"), ("admin", "password1234"), ("nobody", creds["admin"])):
        for method, path, body in calls:
            resp = httpx.request(method.upper(), api + path, json=body, auth=auth, timeout=30)
            assert resp.status_code == 401, (auth, path, resp.status_code, resp.text[:200])
    assert httpx.get(base + "/", timeout=30).status_code == 401  # the UI too
    with httpx.Client(auth=("admin", creds["admin"]), timeout=30) as admin:
        alias = admin.get(api + "/registered-models/alias", params={"name": NAME, "alias": "champion"})
        assert alias.status_code == 200 and alias.json()["model_version"]["version"] == champion_version


def test_lmchain_registry_works_with_credentials_from_the_environment(as_user, champion_version):
    as_user("admin")
    assert str(registry.champion(NAME).version) == champion_version
    assert registry.validation_problem(NAME, champion_version) is None
    from mlflow.exceptions import MlflowException

    as_user(None)
    with pytest.raises(MlflowException, match="401|credentials|Unauthorized|UNAUTHENTICATED"):
        registry.client().get_registered_model(NAME)
    assert registry.champion(NAME) is None  # what the service sees without a login: nothing to load


def test_the_service_user_reads_the_champion_but_cannot_move_it(as_user, champion_version):
    from mlflow.exceptions import MlflowException

    client = as_user("lmchain-serve")
    assert str(registry.champion(NAME).version) == champion_version
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403|Permission denied"):
        client.set_registered_model_alias(NAME, "champion", champion_version)
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403|Permission denied"):
        client.set_model_version_tag(NAME, champion_version, registry.VALIDATED_TAG, "{}")


def test_the_auth_config_is_private(server):
    _, _, root = server
    config = root / "auth" / "basic_auth.ini"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert "default_permission = READ" in config.read_text()


@pytest.mark.parametrize("password,why", [("password1234", "published default"), ("short", "too short"),
                                          ("", "is empty")])
def test_a_weak_admin_password_never_starts_the_server(tmp_path, password, why):
    env = {**subprocess_env(tmp_path / "home"), "PYTHONPATH": str(REPO),
           "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path / 'auth.db'}", "MLFLOW_AUTH_ADMIN_PASSWORD": password}
    proc = subprocess.run(init_cmd("--host", "127.0.0.1", "--port", "9"), env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "MLFLOW_ADMIN_PASSWORD" in proc.stderr and why in proc.stderr, proc.stderr
    assert not (tmp_path / "auth.db").exists()
