"""kill -9 of a training process inside a real Airflow run: the pretrain task fails, Airflow's retry
reruns it, and the job resumes from its checkpoint instead of starting over.

The run is a real ``dag.test()`` of ``lmchain_pipeline`` (tiny recipe, up to pretrain): Airflow
3.3's dag.test puts a failed task with retries left into up_for_retry and runs it again once
its retry delay has passed, as a scheduler would.
"""

import json
import threading

import pytest

from conftest import SESSION_HOME, needs_sst2, sigkill_when

pytestmark = [pytest.mark.e2e, needs_sst2]
STEPS = 40


def test_airflow_retry_resumes_a_killed_pretrain_job(airflow_db, monkeypatch):
    from lmchain.artifacts import Manifest, RunContext
    from lmchain.dagrun import load_dag, task_instances

    monkeypatch.setenv("LMCHAIN_RETRY_DELAY_S", "2")  # the DAG's retry wait (30 s by default)

    killed: list[int] = []
    stop = threading.Event()
    # SIGKILL rank 1 once the job has published a checkpoint.
    runs = SESSION_HOME / "runs"
    watcher = threading.Thread(target=sigkill_when, daemon=True,
                               args=(killed, "lmchain.train.pretrain_worker", "--local_rank=1", str(runs)),
                               kwargs={"ready": lambda: any(runs.glob("*/pretrain.work/*/checkpoints/latest")),
                                       "stop": stop})
    watcher.start()
    try:
        dr = load_dag().test(run_conf={
            "recipe": "tiny", "stop_after": "pretrain",
            "overrides": [f"pretrain.max_steps={STEPS}", "pretrain.checkpoint_every=5"]})
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert killed, "no checkpoint appeared, so nothing was killed"
    tis = {t["task_id"]: t for t in task_instances("lmchain_pipeline", dr.run_id)}
    assert str(dr.state) == "success", tis
    assert tis["pretrain"]["state"] == "success"

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id="lmchain_pipeline", run_id=dr.run_id,
                                                   task_id="pretrain").one()
        assert ti.try_number == 2  # the killed attempt, then the retry

    ctx = RunContext(dr.run_id)
    m = Manifest.read(ctx.stage_dir("pretrain"))
    resumed = m.info["resumed_from_step"]
    assert 5 <= resumed < STEPS and resumed % 5 == 0  # from a checkpoint, not from zero
    assert m.info["steps"] == STEPS  # the configured total, not more
    metrics = json.loads((ctx.stage_dir("pretrain") / "job" / "metrics.json").read_text())
    assert metrics["steps_this_attempt"] == STEPS - resumed
    assert [s for s, _ in metrics["losses"]][-1] == STEPS
    assert m.info["tokenizer"]["trained"] and m.info["tokenizer"]["reused"]  # the retry reused it
