"""Running lmchain's DAGs through Airflow from Python: for `lmchain demo`, `lmchain feedback` and the tests.

It uses ``dag.test()``: a real DAG run in the Airflow metadata DB (task instances, XCom, logs,
visible in the UI afterwards), with tasks executed in this process one after another.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from lmchain.airflow_env import REPO_ROOT
from lmchain.home import Home
from lmchain.errors import LmchainError

DAG_ID = "lmchain_pipeline"
FEEDBACK_DAG_ID = "lmchain_feedback"


@dataclass
class DagRunReport:
    run_id: str
    state: str
    wall_seconds: float
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def task_seconds(self) -> float:
        return round(sum(t["duration"] or 0.0 for t in self.tasks), 2)

    @property
    def overhead_seconds(self) -> float:
        return round(self.wall_seconds - self.task_seconds, 2)


def load_dag(dag_id: str = DAG_ID):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if bag.import_errors:
        errors = "; ".join(f"{path}: {err.strip().splitlines()[-1]}" for path, err in bag.import_errors.items())
        raise LmchainError(f"DAG import errors: {errors}")
    return bag.get_dag(dag_id)


def task_instances(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id).all()
        rows = [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": str(ti.state),
                "duration": ti.duration,
                "start": ti.start_date.isoformat() if ti.start_date else None,
            }
            for ti in tis
        ]
    return sorted(rows, key=lambda r: r["start"] or "~")


def _form_recipe(recipe: str) -> str:
    """A recipe as the form takes it: a name of configs/ as is, a path as its absolute real path."""
    from lmchain.config import recipes, resolve_recipe

    if recipe in recipes():
        return recipe
    return str(resolve_recipe(recipe).resolve())


def run_dag(dag_id: str, recipe: str, overrides: list[str], params: dict[str, Any] | None = None) -> DagRunReport:
    """Trigger one run of ``dag_id`` (with more trigger-form ``params`` if given) and wait for it;
    raise with the failing stage's message.

    The CLI's ``--set`` may set any key (its user runs lmchain on their own machine and can edit
    the recipe anyway), unless the deployer set ``LMCHAIN_OVERRIDE_KEYS``; the form's other
    bounds (sources under the roots) stay. Likewise a recipe given by path (``--recipe
    ~/my.yaml``) joins the recipe folders for this run, unless the deployer set
    ``LMCHAIN_RECIPE_ROOTS``."""
    from lmchain.params import OVERRIDE_KEYS_ENV, RECIPE_ROOTS_ENV, recipe_roots

    recipe = _form_recipe(recipe)
    trusted = {OVERRIDE_KEYS_ENV: "*"}
    if os.path.isabs(recipe):  # given by path: its folder joins the recipe folders for this run
        trusted[RECIPE_ROOTS_ENV] = os.pathsep.join(str(r) for r in [*recipe_roots(), Path(recipe).parent])
    trusted = {key: value for key, value in trusted.items() if key not in os.environ}
    os.environ.update(trusted)
    try:
        dag = load_dag(dag_id)
        t0 = time.perf_counter()
        dr = dag.test(run_conf={"recipe": recipe, "overrides": list(overrides), **(params or {})})
    finally:
        for key in trusted:
            os.environ.pop(key, None)
    wall = round(time.perf_counter() - t0, 2)
    report = DagRunReport(dr.run_id, str(dr.state), wall, task_instances(dag_id, dr.run_id))
    if report.state != "success":
        raise LmchainError(failure_message(report, dag_id))
    return report


def run_pipeline_dag(recipe: str, overrides: list[str], params: dict[str, Any] | None = None) -> DagRunReport:
    return run_dag(DAG_ID, recipe, overrides, params)


def run_feedback_dag(recipe: str, overrides: list[str]) -> tuple[DagRunReport, list[dict[str, Any]]]:
    """One run of ``lmchain_feedback``; returns its report and the asset events it emitted."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    report = run_dag(FEEDBACK_DAG_ID, recipe, overrides)
    with create_session() as session:
        events = [
            {"asset": e.asset.name, "extra": dict(e.extra or {})}
            for e in session.query(AssetEvent).all()
            if (e.extra or {}).get("feedback_run_id") == report.run_id
        ]
    return report, events


def failure_message(report: DagRunReport, dag_id: str = DAG_ID) -> str:
    failed = [t["task_id"] for t in report.tasks if t["state"] == "failed"]
    home = Home.from_env()
    error_file = home.run_dir(report.run_id) / "error.json"
    if error_file.is_file():
        err = json.loads(error_file.read_text())
        return f"{dag_id} run {report.run_id} failed at stage {err['stage']}: {err['message']}"
    logs = home.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={report.run_id}"
    return (
        f"{dag_id} run {report.run_id} ended {report.state}; failed tasks: {', '.join(failed) or 'none'}. "
        f"Task logs: {logs}"
    )
