"""`lmchain up` binds everything to 127.0.0.1 by default: the started processes (Airflow's
api-server, scheduler, dag-processor and triggerer, MLflow, the service) listen on loopback
only, and the generated Airflow password file is private."""

import json
import os
import signal
import stat
import subprocess
import time

import httpx
import psutil
import pytest

from conftest import lmchain_cmd, subprocess_env
from lmchain import airflow_env
from lmchain.netutil import free_port
from lmchain.up import is_loopback, mlflow_command, service_commands, up_env


def _listening(root: psutil.Process) -> dict[int, set[str]]:
    """pid -> the addresses (ip:port) its TCP sockets listen on, for the process and its descendants."""
    found = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            socks = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found[proc.pid] = {f"{c.laddr.ip}:{c.laddr.port}" for c in socks if c.status == psutil.CONN_LISTEN}
    return found


def _wait_http(url: str, proc: subprocess.Popen, log, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, open(log).read()[-3000:]
        try:
            if httpx.get(url, timeout=3).status_code < 500:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} not up in {timeout}s:\n{open(log).read()[-3000:]}"
        time.sleep(1)


def test_up_listens_on_loopback_only(tmp_path):
    home = tmp_path / "home"
    (home / "deployments").mkdir(parents=True)
    # A deployment whose model does not exist: the service starts (and reports it on /readyz).
    (home / "deployments" / "current.json").write_text(json.dumps({"model_uri": "models:/absent@champion"}))
    ports = {"airflow": free_port(), "mlflow": free_port(), "serve": free_port()}
    env = {**subprocess_env(home), "AIRFLOW__API__WORKERS": "1"}
    log = tmp_path / "up.log"
    proc = subprocess.Popen(lmchain_cmd("up", "--airflow-port", str(ports["airflow"]), "--mlflow-port",
                                        str(ports["mlflow"]), "--serve-port", str(ports["serve"])),
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{ports['airflow']}/api/v2/monitor/health", proc, log)
        _wait_http(f"http://127.0.0.1:{ports['mlflow']}/health", proc, log)
        _wait_http(f"http://127.0.0.1:{ports['serve']}/healthz", proc, log)
        time.sleep(3)  # scheduler, dag-processor and triggerer have started their jobs by now
        listening = _listening(psutil.Process(proc.pid))
        addresses = set().union(*listening.values())
        for name, port in ports.items():
            assert f"127.0.0.1:{port}" in addresses, (name, sorted(addresses))
        outside = sorted(a for a in addresses if not a.startswith("127.0.0.1:"))
        assert not outside, f"listening beyond loopback: {outside}"  # e.g. Airflow's log servers on [::]:8793
        commands = []
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                commands.append(" ".join(child.cmdline()))
            except psutil.Error:
                pass
        for name in ("api", "scheduler", "dag", "triggerer", "mlflow", "serve"):  # Airflow renames its processes
            assert any(f"airflow {name}" in c or f"lmchain.cli {name}" in c or "bin/mlflow server" in c
                       for c in commands if name in c), (name, commands)  # each one was checked above
        passwords = home / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert stat.S_IMODE(passwords.stat().st_mode) == 0o600 and "admin" in passwords.read_text()
        # The UI needs that password: no anonymous API access.
        assert httpx.get(f"http://127.0.0.1:{ports['airflow']}/api/v2/dags", timeout=10).status_code == 401
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"`lmchain up` did not stop on SIGTERM:\n{log.read_text()[-3000:]}")


def test_host_flag_reaches_every_server_and_an_open_mlflow_needs_a_login(tmp_path, monkeypatch):
    """What --host changes, without binding anything: the commands and settings `up` would start."""
    home = tmp_path / "home"
    monkeypatch.setenv("LMCHAIN_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("AIRFLOW__") or key in ("AIRFLOW_HOME", "MLFLOW_TRACKING_URI"):
            monkeypatch.delenv(key)
    env = up_env(home, "10.1.2.3", 8081, 5001, 8001)
    assert env["AIRFLOW__API__HOST"] == "10.1.2.3"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://10.1.2.3:8081/execution/"
    commands = service_commands(home, env, "10.1.2.3", 8081, 5001, 8001, with_serve=True)
    for name in ("api-server", "mlflow", "serve"):
        cmd = commands[name][0]
        assert cmd[cmd.index("--host") + 1] == "10.1.2.3", name
    for name in ("scheduler", "triggerer"):
        assert "--skip-serve-logs" in commands[name][0]
    cmd, mlflow_env = commands["mlflow"]
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    config = mlflow_env["MLFLOW_AUTH_CONFIG_PATH"]
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    for secret in ("mlflow-admin-password", "mlflow-flask-secret"):
        assert stat.S_IMODE((home / "secrets" / secret).stat().st_mode) == 0o600
    loopback_cmd, _ = mlflow_command(home, env, "127.0.0.1", 5001)
    assert "--app-name" not in loopback_cmd  # on loopback only this machine reaches it
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("myhost")
    assert airflow_env.api_port_env(8080, "0.0.0.0")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
        "http://127.0.0.1:8080/")
