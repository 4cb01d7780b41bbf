"""lmchain_pipeline: collect -> curate -> gate -> annotate -> gate_labels -> pretrain -> finetune
(one mapped task per hyperparameter-search trial) -> evaluate -> register -> deploy.

Runs nightly (cron in ``LMCHAIN_PIPELINE_SCHEDULE``, default 02:00 UTC; the params of scheduled
runs in ``LMCHAIN_PIPELINE_PARAMS``), whenever
``lmchain_feedback`` decides that enough corrected labels arrived (the feedback-labels asset),
and from the UI's trigger form. Wiring only: each task names its stage's function in
``lmchain.stages`` (task id, config section, inputs and assets are the stage module's), and tasks
pass small manifests (URIs, counts, metrics) through XCom, never data.
"""

from datetime import timedelta

from airflow.sdk import dag
from airflow.timetables.assets import AssetOrTimeSchedule

from lmchain import stages
from lmchain.airflow_tasks import params_schema, retry_delay, stage
from lmchain.assets import FEEDBACK_LABELS
from lmchain.notify import on_failure
from lmchain.schedule import nightly_timetable

default_args = {
    "owner": "lmchain",
    "retries": 2,
    "retry_delay": retry_delay(),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "on_failure_callback": on_failure,
}
# Training runs on the GPU workers' queue (the LocalExecutor ignores queues).
GPU = {"queue": "gpu"}


def finetune(**upstream):
    """One mapped task per trial of the hyperparameter search (one task without a search), then
    ``finetune`` keeps the trial with the best validation macro-F1."""
    trials = stage(stages.finetune.trials)()
    tried = stage(stages.finetune.trial, **GPU).partial(**upstream).expand(index=trials)
    return stage(stages.finetune.run)(trials=tried, **upstream)


@dag(
    dag_id="lmchain_pipeline",
    # A scheduled run's data interval is the period since the previous fire of the cron: collect
    # reads what arrived in it (lmchain.schedule).
    schedule=AssetOrTimeSchedule(timetable=nightly_timetable(), assets=FEEDBACK_LABELS),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params=params_schema(),
    tags=["lmchain", "training"],
    doc_md=__doc__,
)
def lmchain_pipeline():
    collected = stage(stages.collect.run)()
    curated = stage(stages.curate.run)(collect=collected)
    gated = stage(stages.gate.run)(collect=collected, curate=curated)
    annotated = stage(stages.annotate.run)(gate=gated)
    stage(stages.review_queue.run)(annotate=annotated)
    labelled = stage(stages.gate_labels.run)(annotate=annotated)
    pretrained = stage(stages.pretrain.run, **GPU)(gate=gated, gate_labels=labelled)
    tuned = finetune(pretrain=pretrained, gate_labels=labelled)
    evaluated = stage(stages.evaluate.run)(finetune=tuned, gate_labels=labelled)
    registered = stage(stages.register.run)(finetune=tuned, evaluate=evaluated)
    stage(stages.deploy.run)(register=registered, gate_labels=labelled)


lmchain_pipeline()
