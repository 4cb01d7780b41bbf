"""DAG integrity: imports cleanly, fast, without heavy libraries, with retries and tags."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

HEAVY = ["torch", "transformers", "deepspeed", "mlflow", "great_expectations"]

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
dags = {}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {
        "tags": sorted(dag.tags),
        "tasks": {t.task_id: {"retries": t.retries, "queue": t.queue, "mapped": "Mapped" in type(t).__name__}
                  for t in dag.tasks},
        "params": sorted(dag.params.keys()),
        "order": [t.task_id for t in dag.topological_sort()] if hasattr(dag, "topological_sort") else [],
        "timetable": type(dag.timetable).__name__,
        "schedule": json.dumps(vars(dag.timetable), default=repr),
        "catchup": dag.catchup,
        "outlets": {t.task_id: sorted(a.name for a in t.outlets) for t in dag.tasks if t.outlets},
        "on_failure": {t.task_id: bool(t.on_failure_callback) for t in dag.tasks},
    }
print(json.dumps({
    "airflow_import_s": t1 - t0, "parse_s": t2 - t1,
    "errors": {k: v for k, v in bag.import_errors.items()},
    "heavy": [m for m in %r if m in sys.modules],
    "dags": dags,
}))
""" % (HEAVY,)


def _probe():
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags")], capture_output=True, text=True,
                         env=os.environ.copy(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dags_import_fast_without_heavy_modules_and_with_retries(capsys):
    info = _probe()
    with capsys.disabled():  # reported in every test run's output, not only on failure
        print(f"\nDAG parse time: {info['parse_s']:.3f}s (airflow import {info['airflow_import_s']:.2f}s)")
    assert info["errors"] == {}
    assert info["heavy"] == []
    dag = info["dags"]["lmchain_pipeline"]
    assert "lmchain" in dag["tags"]
    assert set(dag["tasks"]) == {"collect", "curate", "gate", "annotate", "review_queue", "gate_labels", "pretrain",
                                 "finetune_trials", "finetune_trial", "finetune", "evaluate", "register", "deploy"}
    assert all(t["retries"] >= 1 for t in dag["tasks"].values())
    # Training goes to the GPU queue; the search's trials are one mapped task.
    assert dag["tasks"]["pretrain"]["queue"] == "gpu" and dag["tasks"]["finetune_trial"]["queue"] == "gpu"
    assert dag["tasks"]["finetune_trial"]["mapped"] and not dag["tasks"]["finetune"]["mapped"]
    assert dag["params"] == sorted(["recipe", "stop_after", "pretrain", "base_model", "finetune_method", "epochs",
                                    "annotation_mode", "promotion_margin", "sources", "seeds", "dry_run", "overrides"])
    # Nightly, or when the feedback loop emits the feedback-labels asset; no catch-up of missed nights.
    assert dag["timetable"] == "AssetOrTimeSchedule" and not dag["catchup"]
    assert "lmchain_feedback_labels" in dag["schedule"] and "At 02:00" in dag["schedule"]
    assert dag["outlets"] == {"gate": ["lmchain_curated_corpus"], "gate_labels": ["lmchain_labelled_set"],
                              "deploy": ["lmchain_champion_model"]}
    feedback = info["dags"]["lmchain_feedback"]
    assert [t for t in feedback["order"]] == ["export", "gate", "merge", "decide"]
    assert feedback["outlets"] == {"decide": ["lmchain_feedback_labels"]}
    assert all(dag["on_failure"].values()) and all(feedback["on_failure"].values())


def test_airflow_cli_reports_no_import_errors(airflow_db):
    airflow = [str(Path(sys.executable).with_name("airflow"))]
    # Parse the bundle into the metadata DB as the dag-processor would, then ask the CLI.
    subprocess.run(airflow + ["dags", "reserialize"], check=True, capture_output=True, env=os.environ.copy(),
                   timeout=300)
    out = subprocess.run(airflow + ["dags", "list-import-errors", "--output", "json"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1] or "[]") == []
    listed = subprocess.run(airflow + ["dags", "list", "--output", "json"], capture_output=True, text=True,
                            env=os.environ.copy(), timeout=300)
    assert "lmchain_pipeline" in listed.stdout


def test_plugin_loads_with_ui_links_and_report_link(airflow_db):
    airflow = [str(Path(sys.executable).with_name("airflow"))]
    out = subprocess.run(airflow + ["plugins", "--output", "json"], capture_output=True, text=True,
                         env=os.environ.copy(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (plugin,) = [p for p in json.loads(out.stdout) if p["name"] == "lmchain"]
    assert {a["url_prefix"] for a in plugin["fastapi_apps"]} == {"/lmchain/data-docs", "/lmchain/runs"}
    assert {v["name"] for v in plugin["external_views"]} == {"MLflow (lmchain)", "Model service (lmchain)",
                                                              "Data Docs (lmchain)"}
    assert len(plugin["global_operator_extra_links"]) == 1


def test_report_link_points_at_the_runs_report():
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("lmchain_plugin", REPO / "plugins" / "lmchain_plugin.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    link = plugin.StageReportLink()
    key = SimpleNamespace(task_id="evaluate", run_id="manual__2026-11-29T20:46:50+00:00")
    assert link.get_link(None, ti_key=key) == "/lmchain/runs/manual__2026-11-29T20_46_50_00_00/evaluate/report.html"
    assert link.get_link(None, ti_key=SimpleNamespace(task_id="gate", run_id="r")) == "/lmchain/data-docs/index.html"
    assert link.get_link(None, ti_key=SimpleNamespace(task_id="curate", run_id="r")) == ""
