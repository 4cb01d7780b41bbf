"""`lmchain up`: Airflow (standalone), the MLflow UI and the model service, together.

Each runs as a child process with the LMCHAIN_HOME environment; Ctrl-C stops all three.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmchain import airflow_env
from lmchain.artifacts import home


def run_services(airflow_port: int, mlflow_port: int, serve_port: int) -> int:
    lm_home = home()
    bin_dir = Path(sys.executable).parent
    # `airflow standalone` starts its components as `airflow ...` found on PATH.
    env = {**os.environ, **airflow_env.apply(lm_home), **airflow_env.api_port_env(airflow_port),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    airflow_env.ensure_db(lm_home)
    mlflow_root = lm_home / "mlflow"
    services = {
        "airflow": [str(bin_dir / "airflow"), "standalone"],
        "mlflow": [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                   "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
                   "--default-artifact-root", (mlflow_root / "artifacts").as_uri()],
    }
    if (lm_home / "deployments" / "current.json").is_file():
        services["serve"] = [sys.executable, "-m", "lmchain.cli", "serve", "--port", str(serve_port)]
    else:
        print("no deployed model yet (run `lmchain demo`): starting without the service")
    logs = lm_home / "logs"
    logs.mkdir(exist_ok=True)
    procs = {}
    for name, cmd in services.items():
        log = open(logs / f"{name}.log", "a")
        procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        print(f"started {name} (pid {procs[name].pid}), log {logs / f'{name}.log'}")
    print(f"\nAirflow UI   http://127.0.0.1:{airflow_port}  (user admin; password in "
          f"{lm_home / 'airflow' / 'simple_auth_manager_passwords.json.generated'})")
    print(f"MLflow UI    http://127.0.0.1:{mlflow_port}")
    if "serve" in procs:
        print(f"service      http://127.0.0.1:{serve_port}/docs")
    print("Ctrl-C stops everything.")

    def stop(signum, frame):  # `kill` or a supervisor's SIGTERM: stop the children too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(1)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        print(f"{', '.join(dead)} exited; see {logs}; stopping the rest")
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
