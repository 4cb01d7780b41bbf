"""The callable behind every task of ``lmchain_pipeline``; imported by the DAG at parse time.

It must stay light: nothing here imports a stage module, Airflow internals or ML libraries
until a task actually runs.
"""

from __future__ import annotations

from typing import Any

def params_schema() -> dict[str, Any]:
    """The trigger form: one validated field per choice a user makes (see lmchain.params)."""
    from airflow.sdk import Param

    from lmchain.params import schema

    return {name: Param(spec.pop("default"), **spec) for name, spec in schema().items()}


def _config(params: dict[str, Any]):
    from lmchain.config import load_config
    from lmchain.params import DEFAULT_RECIPE, to_overrides

    return load_config(params.get("recipe") or DEFAULT_RECIPE, to_overrides(params))


def _record_trigger(context: dict[str, Any]) -> None:
    """Why this run exists (schedule, UI, or a feedback asset event and its reason), beside the run."""
    from lmchain.artifacts import RunContext, write_json

    events = context.get("triggering_asset_events") or {}
    reasons = [dict(e.extra or {}) for evs in events.values() for e in evs] if events else []
    dag_run = context.get("dag_run")
    write_json(RunContext(context["run_id"]).run_dir / "trigger.json", {
        "run_type": str(getattr(dag_run, "run_type", "")), "asset_events": reasons,
        "params": {k: v for k, v in context["params"].items()}})


def stage_task(stage: str, **upstream: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` for the current DAG run with the run's params.

    Bad input (``LmchainError``) fails the task without retries: retrying cannot fix a wrong
    path or key, and the message is what the user needs to see.
    """
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from lmchain.errors import LmchainError
    from lmchain.params import should_skip
    from lmchain.pipeline import run_stage

    context = get_current_context()
    params = context["params"]
    try:
        cfg = _config(params)
        if stage == "collect":
            _record_trigger(context)
            if params.get("dry_run"):
                from lmchain.cli import preflight

                preflight(cfg)
                raise AirflowSkipException("dry run: recipe, params and input files are valid; nothing ran")
        skip = should_skip(stage, params)
        if skip:
            raise AirflowSkipException(f"{stage} skipped: {skip}")
        return run_stage(stage, cfg, context["run_id"], upstream)
    except LmchainError as exc:
        record_error(context["run_id"], stage, str(exc))
        raise AirflowFailException(f"{stage}: {exc}") from exc


def feedback_task(stage: str, **upstream: dict[str, Any]) -> dict[str, Any]:
    """One stage of ``lmchain_feedback``; ``decide`` turns a retrain decision into an asset event."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from lmchain.errors import LmchainError
    from lmchain.feedback.stages import run_feedback_stage

    context = get_current_context()
    try:
        manifest = run_feedback_stage(stage, _config(context["params"]), context["run_id"], upstream)
    except LmchainError as exc:
        record_error(context["run_id"], f"feedback_{stage}", str(exc))
        raise AirflowFailException(f"feedback {stage}: {exc}") from exc
    if stage == "decide":
        if not manifest["info"]["trigger"]:
            # Skipped: no asset event, so lmchain_pipeline is not scheduled.
            raise AirflowSkipException(manifest["info"]["reason"])
        from lmchain.assets import FEEDBACK_LABELS

        context["outlet_events"][FEEDBACK_LABELS].extra = {"reason": manifest["info"]["reason"],
                                                         "feedback_run_id": context["run_id"]}
    return manifest


def record_error(run_id: str, stage: str, message: str) -> None:
    """Keep the user-facing message beside the run, where `lmchain demo` reads it back."""
    from lmchain.artifacts import RunContext, write_json

    write_json(RunContext(run_id).run_dir / "error.json", {"stage": stage, "message": message})
