"""Scheduled runs through a real Airflow scheduler: two consecutive runs of the cron, and the
second collects only the data that arrived after the first one's window.

The cron fires every minute here (``LMCHAIN_PIPELINE_SCHEDULE``) and the scheduled runs' params
(``LMCHAIN_PIPELINE_PARAMS``) stop after collect, so the test takes minutes, not nights. A file
is dated inside each of the next minutes' windows before Airflow starts; each run must read
exactly the file of its own window.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import REPO, needs_sst2, subprocess_env
from lmchain import airflow_env
from lmchain.artifacts import RunContext, read_jsonl
from lmchain.netutil import free_port

pytestmark = [pytest.mark.e2e, needs_sst2]  # the tiny recipe names SST-2's file (outside every window)
BIN = Path(sys.executable).parent
MINUTES = 12  # files for this many future fires: more than the test waits for


def _paused(db: Path) -> bool | None:
    """Whether lmchain_pipeline is paused; None before the DAG processor has written it."""
    with sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute("SELECT is_paused FROM dag WHERE dag_id = 'lmchain_pipeline'").fetchone()
    return None if row is None else bool(row[0])


def _scheduled_runs(db: Path) -> list[dict]:
    """The pipeline's scheduled runs, read from Airflow's metadata DB (naive UTC timestamps)."""
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute("SELECT run_id, state, data_interval_start, data_interval_end FROM dag_run "
                            "WHERE dag_id = 'lmchain_pipeline' AND run_type = 'scheduled'").fetchall()
    return [{"run_id": r[0], "state": r[1],
             "start": datetime.fromisoformat(r[2]).replace(tzinfo=timezone.utc),
             "end": datetime.fromisoformat(r[3]).replace(tzinfo=timezone.utc)} for r in rows]


def _import_errors(db) -> list[str]:
    """What the DAG processor could not import (a DAG that fails to parse is never unpaused)."""
    with sqlite3.connect(db, timeout=30) as conn:
        return [r[0][-1500:] for r in conn.execute("SELECT stacktrace FROM import_error").fetchall()]


def test_consecutive_scheduled_runs_each_collect_only_their_new_data(tmp_path):
    home, incoming = tmp_path / "home", tmp_path / "incoming"
    incoming.mkdir()
    # One file per future minute, dated 30 s before that minute's fire: the run at fire T owns
    # the window [T - 1 min, T), so it must read that one file and no other.
    first_fire = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    owner = {}
    for k in range(MINUTES):
        fire = first_fire + timedelta(minutes=k)
        path = incoming / f"minute{k:02d}.tsv"
        path.write_text(f"text\nthe sentence that arrived in the minute before {fire:%H:%M}\n")
        os.utime(path, ((fire - timedelta(seconds=30)).timestamp(),) * 2)
        owner[fire] = f"the sentence that arrived in the minute before {fire:%H:%M}"
    port = free_port("127.0.0.1")
    env = subprocess_env(home)
    env.update(airflow_env.airflow_env(home))
    env.update(airflow_env.api_port_env(port))
    env.update({"LMCHAIN_PIPELINE_SCHEDULE": "* * * * *",
                "LMCHAIN_PIPELINE_PARAMS": json.dumps({"recipe": "tiny", "stop_after": "collect",
                                                        "sources": [f"{incoming}/*.tsv"]}),
                # Form sources must lie under the deployer's roots (issue 18): this test's folder.
                "LMCHAIN_SOURCE_ROOTS": str(incoming),
                # Two task slots are plenty for collect-only runs, and start faster than 32.
                "AIRFLOW__CORE__PARALLELISM": "2",
                # The scheduler's log server: not Airflow's fixed 8793, which another test's may hold.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port("127.0.0.1")),
                "PATH": f"{BIN}:{env.get('PATH', '')}"})
    (home / "airflow").mkdir(parents=True)
    db = home / "airflow" / "airflow.db"
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    procs = []
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        for name, cmd in (("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]),
                          ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"])):
            procs.append(subprocess.Popen([str(BIN / "airflow"), *cmd], env=env, cwd=REPO,
                                          stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                          start_new_session=True))
        # Unpause once the DAG processor has written the DAG (unpausing an unknown DAG is a no-op).
        deadline = time.monotonic() + 180
        while _paused(db) is not False:
            assert time.monotonic() < deadline, f"lmchain_pipeline was not parsed and unpaused in 180 s: {_import_errors(db)}"
            subprocess.run([str(BIN / "airflow"), "dags", "unpause", "lmchain_pipeline"], env=env,
                           capture_output=True, timeout=120)
            time.sleep(3)
        deadline = time.monotonic() + 8 * 60
        while True:
            scheduled = _scheduled_runs(db)
            done = [r for r in scheduled if r["state"] in ("success", "failed")]
            if len(done) >= 2:
                break
            assert time.monotonic() < deadline, f"fewer than two scheduled runs finished: {scheduled}"
            time.sleep(5)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    first, second = sorted(done, key=lambda r: r["end"])[:2]
    assert first["state"] == second["state"] == "success", (first, second, logs)
    assert second["start"] == first["end"] == first["start"] + timedelta(minutes=1)  # consecutive, no gap
    for run in (first, second):
        run_dir = RunContext(run["run_id"], home=home).run_dir
        manifest = json.loads((run_dir / "collect" / "manifest.json").read_text())
        records = [r["text"] for r in read_jsonl(manifest["outputs"]["records"])]
        assert records == [owner[run["end"]]], (run["run_id"], records)
        # The recipe's SST-2 files and every other minute's file lie outside this window.
        assert manifest["counts"]["files_outside_window"] >= MINUTES - 1
        trigger = json.loads((run_dir / "trigger.json").read_text())
        assert trigger["params"]["stop_after"] == "collect"
