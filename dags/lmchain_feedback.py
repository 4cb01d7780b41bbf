"""lmchain_feedback: export the service's feedback -> gate it -> merge corrected labels -> decide.

When enough new labels arrived (or the model is corrected too often), ``decide`` emits the
feedback-labels asset event, which schedules ``lmchain_pipeline``; its reason travels in the
event. Runs every 30 minutes (``LMCHAIN_FEEDBACK_SCHEDULE``) and on demand. Wiring only: the
stages live in ``lmchain.feedback.stages``.
"""

import os

from airflow.sdk import dag, task

from lmchain.airflow_tasks import feedback_task, params_schema, retry_delay
from lmchain.assets import FEEDBACK_LABELS
from lmchain.notify import on_failure

default_args = {
    "owner": "lmchain",
    "retries": 2,
    "retry_delay": retry_delay(),
    "on_failure_callback": on_failure,
}


@dag(
    dag_id="lmchain_feedback",
    schedule=os.environ.get("LMCHAIN_FEEDBACK_SCHEDULE", "*/30 * * * *"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    # The same recipe and overrides fields as the pipeline's form: label names, gate thresholds
    # and feedback.* come from the recipe.
    params=params_schema(["recipe", "overrides"]),
    tags=["lmchain", "feedback"],
    doc_md=__doc__,
)
def lmchain_feedback():
    exported = task(feedback_task, task_id="export")("export")
    gated = task(feedback_task, task_id="gate")("gate", export=exported)
    merged = task(feedback_task, task_id="merge")("merge", gate=gated)
    task(feedback_task, task_id="decide", outlets=[FEEDBACK_LABELS])("decide", merge=merged)


lmchain_feedback()
