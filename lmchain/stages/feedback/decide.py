"""The feedback ``decide`` task: retrain when ``min_new_labels`` labels arrived since the last
trigger, or when the share of feedback that corrects the model exceeds ``max_error_rate``
(drift). The reason is recorded; the DAG turns a positive decision into an event of the
feedback-labels asset, which schedules ``lmchain_pipeline``."""

from __future__ import annotations

import time

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_json, write_json
from lmchain.config import PipelineConfig

CONFIG = None  # the whole recipe: feedback.*
READS = ("merge",)
# Emitted by the DAG task only when the decision is to retrain (the task is skipped otherwise).
ASSETS = ("lmchain_feedback_labels",)


def run(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """Retrain or not, and why. Counts accumulate across feedback runs until a trigger."""
    fb = cfg.feedback
    counts = inputs["merge"]["counts"]
    state_file = ctx.home.trigger_state
    state = read_json(state_file, {"pending_labels": 0, "pending_records": 0, "pending_corrections": 0})
    if state.get("last_run_id") != ctx.run_id:  # a rerun of this run must not count its batch twice
        state["pending_labels"] += counts["new_labels"] + counts["changed_labels"]
        state["pending_records"] += counts["batch"]
        state["pending_corrections"] += counts["batch"] - counts["confirmations"]
        state["last_run_id"] = ctx.run_id
    error_rate = state["pending_corrections"] / state["pending_records"] if state["pending_records"] else 0.0
    reasons = []
    if state["pending_labels"] >= fb.min_new_labels:
        reasons.append(
            f"{state['pending_labels']} new or changed labels >= feedback.min_new_labels={fb.min_new_labels}"
        )
    if state["pending_records"] >= fb.min_batch_for_drift and error_rate > fb.max_error_rate:
        reasons.append(
            f"drift: {error_rate:.0%} of {state['pending_records']} feedback records correct the model "
            f"(> feedback.max_error_rate={fb.max_error_rate:.0%})"
        )
    trigger = bool(reasons)
    reason = "; ".join(reasons) or (
        f"waiting: {state['pending_labels']} of {fb.min_new_labels} new labels, error rate {error_rate:.0%}"
    )
    decision = {
        "trigger": trigger,
        "reason": reason,
        "pending": dict(state),
        "error_rate": round(error_rate, 4),
        "run_id": ctx.run_id,
    }
    if trigger:  # the next pipeline run consumes what is pending
        state.update(
            pending_labels=0,
            pending_records=0,
            pending_corrections=0,
            last_trigger={"run_id": ctx.run_id, "reason": reason, "at": time.time()},
        )
    write_json(state_file, state)
    with StageOutput(ctx, "feedback_decide", fb.model_dump()) as out:
        write_json(out.output("decision", "decision.json"), decision)
        out.manifest.info = decision
        out.manifest.inputs = {"labels": inputs["merge"]["outputs"]["labels"]}
    return out.manifest
