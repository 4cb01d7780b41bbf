"""Scale-out: the same DAGs on Airflow's distributed engine, without Docker.

PostgreSQL metadata DB, CeleryExecutor with a Redis broker, two Celery workers (one serving the
``default`` queue, one the ``gpu`` queue), the api-server, scheduler and dag-processor, and an
MLflow tracking server backed by PostgreSQL: the services of docker-compose.yml as processes on
this machine (see scaleout_support). ``lmchain_pipeline`` runs on tiny data, triggered through
the REST API and then through the UI's trigger form in headless Chromium.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import needs_sst2
from scaleout_support import (QUEUES, missing_services, start_stack, task_instances, unpause, wait_for_dag,
                              wait_for_run)

DAG_ID = "lmchain_pipeline"

pytestmark = [pytest.mark.distributed, needs_sst2,
              pytest.mark.skipif(missing_services() is not None, reason=str(missing_services()))]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaleout")
    t0 = time.perf_counter()
    stack = start_stack(root)
    print(f"scale-out services up in {time.perf_counter() - t0:.1f}s (logs: {stack.logs})")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def api(stack):
    client = stack.api()
    wait_for_dag(client, stack, DAG_ID)
    unpause(client, DAG_ID)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rest_run(stack, api):
    """One tiny run triggered through the REST API, waited for until it ends."""
    t0 = time.perf_counter()
    resp = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"recipe": "tiny"}})
    assert resp.status_code == 200, resp.text
    run = wait_for_run(api, stack, DAG_ID, resp.json()["dag_run_id"])
    print(f"scale-out run (tiny, Celery) took {time.perf_counter() - t0:.1f}s from trigger to {run['state']}")
    return run, task_instances(api, DAG_ID, run["dag_run_id"])


def launched_deepspeed(stack, run_id: str, task_id: str) -> bool:
    """Whether the task's log shows it started a training job (lmchain.train.launcher's "launching:"
    line: the deepspeed launcher, or a single rank program directly) whose ranks built a DeepSpeed engine."""
    folder = stack.home / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    texts = [log.read_text(errors="replace") for log in folder.rglob("*.log")]
    return any("launching:" in t and "lmchain.train." in t and "DeepSpeed" in t for t in texts)


def test_the_pipeline_succeeds_on_celery(stack, rest_run):
    run, tis = rest_run
    states = {t: ti["state"] for t, ti in tis.items()}
    assert run["state"] == "success", (states, stack.log("scheduler"))
    assert all(s == "success" for s in states.values()), states
    assert {"collect", "pretrain", "deploy"} <= set(states)


def test_training_ran_on_the_gpu_queue_and_the_gpu_worker(stack, rest_run):
    run, tis = rest_run
    # Training tasks are those that launched DeepSpeed, whatever the DAG calls them.
    training = {t for t in tis if launched_deepspeed(stack, run["dag_run_id"], t)}
    assert "pretrain" in training and any(t.startswith("finetune") for t in training), sorted(training)
    logs = {queue: stack.log(name, tail=10**8) for name, queue in QUEUES.items()}
    for task_id, ti in tis.items():
        want = "gpu" if task_id in training else "default"
        other = "default" if want == "gpu" else "gpu"
        assert ti["queue"] == want, f"{task_id} ran on queue {ti['queue']!r}, expected {want!r}"
        # The queue field says where the scheduler sent the task; the workers' logs say who ran it.
        assert f"task_id='{task_id}'" in logs[want], f"{task_id} is not in the {want} worker's log"
        assert f"task_id='{task_id}'" not in logs[other], f"{task_id} ran on the {other} worker"


def test_the_model_landed_in_the_mlflow_server(stack, rest_run, tmp_path):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    versions = client.search_model_versions("name = 'lmchain-tiny'")
    assert [v.version for v in versions] == ["1"], versions
    champion = client.get_model_version_by_alias("lmchain-tiny", "champion")
    assert champion.version == "1" and 0.0 <= float(champion.tags["metric.accuracy"]) <= 1.0
    # Its files came through the server's artifact proxy, and the embedded SQLite store was never used.
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    # The version's files through this client's server (a models:/ URI would be resolved with
    # MLflow's process-wide registry URI, whatever download_artifacts is told).
    source = client.get_model_version_download_uri("lmchain-tiny", champion.version)
    local = Path(download_artifacts(artifact_uri=source, dst_path=str(tmp_path), tracking_uri=stack.mlflow_url))
    assert list(local.rglob("config.json")) and list(local.rglob("model.safetensors"))
    assert not (stack.home / "mlflow" / "mlflow.db").exists()
    deployed = json.loads((stack.home / "deployments" / "current.json").read_text())
    assert "lmchain-tiny" in json.dumps(deployed)


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="headless Chromium not installed (apt-get install chromium chromium-driver)")
def test_a_run_triggered_from_the_ui_form_succeeds(stack, api, rest_run, tmp_path):
    from browser_support import trigger_from_form

    screenshot = Path(os.environ.get("LMCHAIN_SCREENSHOT_DIR", tmp_path)) / "airflow-trigger-form.png"
    run_id = trigger_from_form(stack.api_url, DAG_ID, {"recipe": "tiny", "stop_after": "gate"}, screenshot, api)
    run = wait_for_run(api, stack, DAG_ID, run_id)
    assert run["state"] == "success"
    assert run["conf"]["stop_after"] == "gate" and run["conf"]["recipe"] == "tiny"
    states = {t: ti["state"] for t, ti in task_instances(api, DAG_ID, run_id).items()}
    assert states["gate"] == "success" and states["annotate"] == "skipped", states
    assert screenshot.stat().st_size > 10_000
