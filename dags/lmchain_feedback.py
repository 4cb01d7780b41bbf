"""lmchain_feedback: export the service's feedback -> gate it -> merge corrected labels -> decide.

When enough new labels arrived (or the model is corrected too often), ``decide`` emits the
feedback-labels asset event, which schedules ``lmchain_pipeline``; its reason travels in the
event. Runs every 30 minutes (``LMCHAIN_FEEDBACK_SCHEDULE``) and on demand. Wiring only: each
task names its stage's function in ``lmchain.stages.feedback``.
"""

import os

from airflow.sdk import dag

from lmchain.airflow_tasks import params_schema, retry_delay, stage
from lmchain.stages import feedback
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
    exported = stage(feedback.export.run)()
    gated = stage(feedback.gate.run)(export=exported)
    merged = stage(feedback.merge.run)(gate=gated)
    stage(feedback.decide.run)(merge=merged)  # emits the feedback-labels asset when it decides to retrain


lmchain_feedback()
