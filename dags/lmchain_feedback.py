"""lmchain_feedback: export the service's feedback -> gate it -> merge corrected labels -> decide.

When enough new labels arrived (or the model is corrected too often), ``decide`` emits the
feedback-labels asset event, which schedules ``lmchain_pipeline``; its reason travels in the
event. Runs every 30 minutes (``LMCHAIN_FEEDBACK_SCHEDULE``) and on demand. Wiring only: the
stages live in ``lmchain.feedback.stages``.
"""

import os
from datetime import timedelta

from airflow.sdk import Param, dag, task

from lmchain.airflow_tasks import feedback_task
from lmchain.assets import FEEDBACK_LABELS
from lmchain.notify import on_failure
from lmchain.params import DEFAULT_RECIPE, recipes

default_args = {
    "owner": "lmchain",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "on_failure_callback": on_failure,
}


@dag(
    dag_id="lmchain_feedback",
    schedule=os.environ.get("LMCHAIN_FEEDBACK_SCHEDULE", "*/30 * * * *"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={"recipe": Param(DEFAULT_RECIPE, type="string", enum=recipes(), title="Recipe",
                            description="Recipe whose label names, gate thresholds and feedback.* "
                                        "settings apply."),
            "overrides": Param([], type="array", items={"type": "string", "pattern": "^[A-Za-z0-9_.]+=.*$"},
                               title="Overrides", description="Config keys as key=value, e.g. "
                                                              "feedback.min_new_labels=20.")},
    tags=["lmchain", "feedback"],
    doc_md=__doc__,
)
def lmchain_feedback():
    exported = task(feedback_task, task_id="export")("export")
    gated = task(feedback_task, task_id="gate")("gate", export=exported)
    merged = task(feedback_task, task_id="merge")("merge", gate=gated)
    task(feedback_task, task_id="decide", outlets=[FEEDBACK_LABELS])("decide", merge=merged)


lmchain_feedback()
