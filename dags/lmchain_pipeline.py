"""lmchain_pipeline: collect -> curate -> gate -> annotate -> gate_labels -> pretrain -> finetune
(one mapped task per hyperparameter-search trial) -> evaluate -> register -> deploy.

Runs nightly (cron in ``LMCHAIN_PIPELINE_SCHEDULE``, default 02:00 UTC; the params of scheduled
runs in ``LMCHAIN_PIPELINE_PARAMS``), whenever
``lmchain_feedback`` decides that enough corrected labels arrived (the feedback-labels asset),
and from the UI's trigger form. Wiring only: every task runs ``lmchain.airflow_tasks.stage_task``
for one stage, and tasks pass small manifests (URIs, counts, metrics) through XCom, never data.
"""

from datetime import timedelta

from airflow.sdk import dag, task
from airflow.timetables.assets import AssetOrTimeSchedule

from lmchain.airflow_tasks import (finetune_select_task, finetune_trial_task, finetune_trials_task, params_schema,
                                   retry_delay, stage_task)
from lmchain.assets import CHAMPION_MODEL, CURATED_CORPUS, FEEDBACK_LABELS, LABELLED_SET
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
OUTLETS = {"gate": [CURATED_CORPUS], "gate_labels": [LABELLED_SET], "deploy": [CHAMPION_MODEL]}


# Training runs on the GPU workers' queue (the LocalExecutor ignores queues).
GPU = {"queue": "gpu"}


def stage(name, **kwargs):
    queue = GPU if name == "pretrain" else {}
    return task(stage_task, task_id=name, outlets=OUTLETS.get(name, []), **queue)(name, **kwargs)


def finetune(**upstream):
    """One mapped task per trial of the hyperparameter search (one task without a search), then
    ``finetune`` keeps the trial with the best validation macro-F1."""
    trials = task(finetune_trials_task, task_id="finetune_trials")()
    tried = task(finetune_trial_task, task_id="finetune_trial", **GPU).partial(**upstream).expand(index=trials)
    return task(finetune_select_task, task_id="finetune")(trials=tried, **upstream)


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
    collected = stage("collect")
    curated = stage("curate", collect=collected)
    gated = stage("gate", collect=collected, curate=curated)
    annotated = stage("annotate", gate=gated)
    stage("review_queue", annotate=annotated)
    labelled = stage("gate_labels", annotate=annotated)
    pretrained = stage("pretrain", gate=gated, gate_labels=labelled)
    tuned = finetune(pretrain=pretrained, gate_labels=labelled)
    evaluated = stage("evaluate", finetune=tuned, gate_labels=labelled)
    registered = stage("register", finetune=tuned, evaluate=evaluated)
    stage("deploy", register=registered, gate_labels=labelled)


lmchain_pipeline()
