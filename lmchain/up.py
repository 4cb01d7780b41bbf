"""`lmchain up`: Airflow, the MLflow UI and the model service, together, on 127.0.0.1.

Each runs as a child process with the home's environment; Ctrl-C stops them all.
Airflow's components are started one by one (not `airflow standalone`) so that every listening
socket binds where ``--host`` says: the api-server on ``--host``, and no log server at all (the
scheduler and triggerer run with ``--skip-serve-logs``: with LocalExecutor the api-server reads
task logs from the local folder). Airflow's UI needs a login (the simple auth manager; the
generated password file is mode 0600). On a non-loopback ``--host`` MLflow runs its basic-auth
app, with an admin password from MLFLOW_AUTH_ADMIN_PASSWORD or generated under
<home>/secrets, and the service needs API keys (it refuses to start without).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmchain import airflow_env
from lmchain.home import Home

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it resolves to an interface others can reach


def shown_host(host: str) -> str:
    """The address to print in URLs (a wildcard bind is reachable on loopback too)."""
    return LOOPBACK if host in ("0.0.0.0", "::", "") else host


def private_file(path: Path, make=None) -> Path:
    """``path`` with mode 0600 (created, with ``make()``'s text if given, when absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() if make else "")
    os.chmod(path, 0o600)
    return path


def _secret(lm_home: Home, env: dict[str, str], var: str, name: str) -> str:
    if env.get(var):
        return env[var]
    path = private_file(lm_home.secrets / name, lambda: secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def passwords_file(env: dict[str, str]) -> Path:
    """Where the simple auth manager keeps the passwords it generates."""
    configured = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    default = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    return Path(configured) if configured else default


def up_env(lm_home: Home | Path, host: str, airflow_port: int, mlflow_port: int, serve_port: int) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    url_host = shown_host(host)
    return {
        **os.environ,
        **airflow_env.apply(lm_home),
        **airflow_env.api_port_env(airflow_port, host),
        "AIRFLOW__API__HOST": host,
        # Links in the Airflow UI (the plugin's nav entries).
        "LMCHAIN_MLFLOW_URL": f"http://{url_host}:{mlflow_port}",
        "LMCHAIN_SERVE_URL": f"http://{url_host}:{serve_port}/docs",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def mlflow_command(lm_home: Home | Path, env: dict[str, str], host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The MLflow server's command and environment: basic-auth when it listens beyond loopback."""
    lm_home = Home.of(lm_home)
    bin_dir = Path(sys.executable).parent
    cmd = [
        str(bin_dir / "mlflow"),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        env["MLFLOW_TRACKING_URI"],
        "--default-artifact-root",
        lm_home.mlflow_artifacts.as_uri(),
    ]
    if is_loopback(host):
        return cmd, env
    from lmchain import compose_init

    auth_env = {
        **env,
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{lm_home.mlflow_auth_db}",
        "MLFLOW_AUTH_CONFIG_DIR": str(lm_home.mlflow_auth_dir),
        "MLFLOW_AUTH_ADMIN_USERNAME": env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": _secret(lm_home, env, "MLFLOW_AUTH_ADMIN_PASSWORD", "mlflow-admin-password"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(
            lm_home, env, "MLFLOW_FLASK_SERVER_SECRET_KEY", "mlflow-flask-secret"
        ),
    }
    compose_init.check({k: auth_env[k] for k in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")})
    return cmd[:2] + ["--app-name", "basic-auth"] + cmd[2:], compose_init.prepare_mlflow(auth_env)


def service_commands(
    lm_home: Home | Path,
    env: dict[str, str],
    host: str,
    airflow_port: int,
    mlflow_port: int,
    serve_port: int,
    with_serve: bool,
) -> dict[str, tuple[list[str], dict[str, str]]]:
    airflow = str(Path(sys.executable).parent / "airflow")
    services = {
        "api-server": ([airflow, "api-server", "--host", host, "--port", str(airflow_port)], env),
        # No log server: it would listen on every interface (Airflow has no setting for its address).
        "scheduler": ([airflow, "scheduler", "--skip-serve-logs"], env),
        "dag-processor": ([airflow, "dag-processor"], env),
        "triggerer": ([airflow, "triggerer", "--skip-serve-logs"], env),
        "mlflow": mlflow_command(lm_home, env, host, mlflow_port),
    }
    if with_serve:
        services["serve"] = (
            [sys.executable, "-m", "lmchain.cli", "serve", "--host", host, "--port", str(serve_port)],
            env,
        )
    return services


def ensure_mlflow_store(env: dict[str, str], lm_home: Home) -> None:
    """Create or upgrade a local MLflow database before the server and the service both open it:
    two processes migrating one fresh SQLite file at once fail ("table ... already exists")."""
    uri = env["MLFLOW_TRACKING_URI"]
    if uri.startswith("sqlite:"):
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(uri, lm_home.mlflow_artifacts.as_uri())


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return "\n".join("    " + line for line in text[-lines:])


def run_services(airflow_port: int, mlflow_port: int, serve_port: int, host: str = LOOPBACK) -> int:
    lm_home = Home.from_env()
    env = up_env(lm_home, host, airflow_port, mlflow_port, serve_port)
    airflow_env.ensure_db(lm_home)
    ensure_mlflow_store(env, lm_home)
    # The simple auth manager appends to this file; made first, it keeps mode 0600.
    passwords = private_file(passwords_file(env))
    with_serve = lm_home.current_deployment.is_file()
    if not with_serve:
        print("no deployed model yet (run `lmchain demo`): starting without the service")
    services = service_commands(lm_home, env, host, airflow_port, mlflow_port, serve_port, with_serve)
    logs = lm_home.logs
    logs.mkdir(exist_ok=True)
    procs = {}
    for name, (cmd, cmd_env) in services.items():
        log = open(logs / f"{name}.log", "a")
        procs[name] = subprocess.Popen(cmd, env=cmd_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        print(f"started {name} (pid {procs[name].pid}), log {logs / f'{name}.log'}")
    url_host = shown_host(host)
    print(f"\nAirflow UI   http://{url_host}:{airflow_port}  (user admin; password in {passwords})")
    mlflow_login = "" if is_loopback(host) else f"  (user admin; password in {lm_home.secrets})"
    print(f"MLflow UI    http://{url_host}:{mlflow_port}{mlflow_login}")
    if "serve" in procs:
        print(f"service      http://{url_host}:{serve_port}/docs")
    if not is_loopback(host):
        print(f"listening on {host}: reachable from the network (README: Deploying safely)")
    print("Ctrl-C stops everything.")

    def stop(signum, frame):  # `kill` or a supervisor's SIGTERM: stop the children too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(1)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        for name in dead:
            print(f"{name} exited; the end of {logs / f'{name}.log'}:\n{_tail(logs / f'{name}.log')}")
        print("stopping the rest")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
