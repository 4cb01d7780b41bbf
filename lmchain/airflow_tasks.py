"""The callables behind the tasks of ``lmchain_pipeline`` and ``lmchain_feedback``; imported by the
DAGs at parse time.

It must stay light: nothing here imports a stage module, Airflow internals or ML libraries
until a task actually runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import timedelta


def params_schema(fields: list[str] | None = None) -> dict[str, Any]:
    """The trigger form: one validated field per choice a user makes (see lmchain.params);
    ``fields`` picks a subset (the feedback DAG takes only the recipe and overrides)."""
    from airflow.sdk import Param

    from lmchain.params import schema

    return {name: Param(spec.pop("default"), **spec) for name, spec in schema().items()
            if fields is None or name in fields}


def retry_delay() -> "timedelta":
    """The wait before a failed task's first retry: ``LMCHAIN_RETRY_DELAY_S`` seconds (default
    30), doubled for each later retry up to 10 minutes."""
    import os
    from datetime import timedelta

    from lmchain.errors import ConfigError

    raw = os.environ.get("LMCHAIN_RETRY_DELAY_S", "").strip() or "30"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise ConfigError(f"LMCHAIN_RETRY_DELAY_S={raw!r} must be a number of seconds between 0 and 3600")
    return timedelta(seconds=seconds)


def effective_params(context: dict[str, Any]) -> dict[str, Any]:
    """The run's params; a run scheduled by the feedback loop's asset event takes the recipe and
    overrides the feedback run used, so the retrain uses the same data and settings."""
    params = dict(context["params"])
    events = context.get("triggering_asset_events") or {}
    for asset_events in (events.values() if events else []):
        for event in asset_events:
            extra = dict(event.extra or {})
            if "recipe" in extra:
                params["recipe"], params["overrides"] = extra["recipe"], list(extra.get("overrides") or [])
    return params


def window_overrides(context: dict[str, Any]) -> list[str]:
    """A scheduled (nightly) run, or a backfill of past nights, collects only files that arrived in
    its data interval; runs from the UI, the API or the feedback loop read their sources in full."""
    import json

    dag_run = context.get("dag_run")
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    run_type = str(getattr(dag_run, "run_type", "")).lower()
    if not any(kind in run_type for kind in ("scheduled", "backfill")) or not start or not end or start == end:
        return []
    return [f"collect.modified_after={json.dumps(start.isoformat())}",
            f"collect.modified_before={json.dumps(end.isoformat())}"]


def _config(params: dict[str, Any], extra: list[str] | None = None):
    from lmchain.config import load_config
    from lmchain.params import DEFAULT_RECIPE, to_overrides

    return load_config(params.get("recipe") or DEFAULT_RECIPE, to_overrides(params) + list(extra or []))


def _record_trigger(context: dict[str, Any]) -> None:
    """Why this run exists (schedule, UI, or a feedback asset event and its reason), beside the run."""
    from lmchain.artifacts import RunContext, write_json

    events = context.get("triggering_asset_events") or {}
    reasons = [dict(e.extra or {}) for evs in events.values() for e in evs] if events else []
    dag_run = context.get("dag_run")
    write_json(RunContext(context["run_id"]).run_dir / "trigger.json", {
        "run_type": str(getattr(dag_run, "run_type", "")), "asset_events": reasons,
        "params": effective_params(context)})


def stage_task(stage: str, **upstream: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` for the current DAG run with the run's params.

    Bad input (``LmchainError``) fails the task without retries: retrying cannot fix a wrong
    path or key, and the message is what the user needs to see. A training job that was killed
    or crashed (``retryable``) fails the attempt normally, so Airflow's retries rerun it and the
    job resumes from its latest checkpoint.
    """
    return _run_in_task(stage, upstream)


def finetune_trials_task() -> list[int]:
    """The fine-tune search's trial indices, which the trial task is mapped over ([0]: no search)."""
    from lmchain.pipeline import finetune_trials

    return _run_in_task("finetune", {}, call=finetune_trials)


def finetune_trial_task(index: int, **upstream: dict[str, Any]) -> dict[str, Any]:
    """One mapped trial of the fine-tune search (or the plain fine-tune when there is no search)."""
    return _run_in_task("finetune", upstream, entry="run_trial", index=index)


def finetune_select_task(trials: list[dict[str, Any]], **upstream: dict[str, Any]) -> dict[str, Any]:
    """The ``finetune`` manifest: the best trial's model (a single fine-tune passes through)."""
    return _run_in_task("finetune", upstream, entry="select", trials=list(trials))


def _run_in_task(stage: str, upstream: dict[str, Any], call=None, **entry: Any) -> Any:
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from lmchain.errors import LmchainError
    from lmchain.params import should_skip
    from lmchain.pipeline import run_stage

    context = get_current_context()
    params = effective_params(context)
    try:
        cfg = _config(params, window_overrides(context))
        if stage == "collect":
            _record_trigger(context)
            if params.get("dry_run"):
                from lmchain.cli import preflight

                preflight(cfg)
                raise AirflowSkipException("dry run: recipe, params and input files are valid; nothing ran")
        skip = should_skip(stage, params)
        if skip:
            raise AirflowSkipException(f"{stage} skipped: {skip}")
        if call is not None:
            return call(cfg)
        manifest = run_stage(stage, cfg, context["run_id"], upstream, **entry)
        if stage == "collect" and cfg.collect.modified_after and not manifest["counts"].get("records"):
            # A quiet night: nothing arrived, so there is nothing to retrain on (not a failure).
            raise AirflowSkipException(f"no new data between {cfg.collect.modified_after} and "
                                       f"{cfg.collect.modified_before}; the rest of the run is skipped")
        return manifest
    except LmchainError as exc:
        record_error(context["run_id"], stage, str(exc))
        if getattr(exc, "retryable", False):
            raise
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

        params = context["params"]
        context["outlet_events"][FEEDBACK_LABELS].extra = {
            "reason": manifest["info"]["reason"], "feedback_run_id": context["run_id"],
            "recipe": params.get("recipe"), "overrides": list(params.get("overrides") or [])}
    return manifest


def record_error(run_id: str, stage: str, message: str) -> None:
    """Keep the user-facing message beside the run, where `lmchain demo` reads it back."""
    from lmchain.artifacts import RunContext, write_json

    write_json(RunContext(run_id).run_dir / "error.json", {"stage": stage, "message": message})
