"""The tasks of ``lmchain_pipeline`` and ``lmchain_feedback``: :func:`stage` makes the task of a
stage function, adapting the Airflow context (params, upstream manifests via XCom) to the stage's
``run(config, ctx, inputs)`` through the one runner (:mod:`lmchain.stages.runner`). Imported by
the DAGs at parse time.

It must stay light: nothing here imports Airflow internals or ML libraries until a task runs
(the stage modules import theirs inside ``run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from lmchain.home import Home

if TYPE_CHECKING:
    from datetime import timedelta


def params_schema(fields: list[str] | None = None) -> dict[str, Any]:
    """The trigger form: one validated field per choice a user makes (see lmchain.params);
    ``fields`` picks a subset (the feedback DAG takes only the recipe and overrides)."""
    from airflow.sdk import Param

    from lmchain.params import schema

    return {
        name: Param(spec.pop("default"), **spec) for name, spec in schema().items() if fields is None or name in fields
    }


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


def effective_params(context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's params; a run scheduled by the feedback loop's asset event takes the recipe and
    overrides the feedback run used, so the retrain uses the same data and settings."""
    params = dict(context["params"])
    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values() if events else []:
        for event in asset_events:
            extra = dict(event.extra or {})
            if "recipe" in extra:
                params["recipe"], params["overrides"] = extra["recipe"], list(extra.get("overrides") or [])
    return params


def window_overrides(context: Mapping[str, Any]) -> list[str]:
    """A scheduled (nightly) run, or a backfill of past nights, collects only files that arrived in
    its data interval; runs from the UI, the API or the feedback loop read their sources in full."""
    import json

    dag_run = context.get("dag_run")
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    run_type = str(getattr(dag_run, "run_type", "")).lower()
    if not any(kind in run_type for kind in ("scheduled", "backfill")) or not start or not end or start == end:
        return []
    return [
        f"collect.modified_after={json.dumps(start.isoformat())}",
        f"collect.modified_before={json.dumps(end.isoformat())}",
    ]


def _config(params: dict[str, Any], extra: list[str] | None = None):
    from lmchain.config import load_config
    from lmchain.params import DEFAULT_RECIPE, to_overrides

    return load_config(params.get("recipe") or DEFAULT_RECIPE, to_overrides(params) + list(extra or []))


def _record_trigger(context: Mapping[str, Any], home: Home) -> None:
    """Why this run exists (schedule, UI, or a feedback asset event and its reason), beside the run."""
    from lmchain.artifacts import write_json

    events = context.get("triggering_asset_events") or {}
    reasons = [dict(e.extra or {}) for evs in events.values() for e in evs] if events else []
    dag_run = context.get("dag_run")
    write_json(
        home.run_dir(context["run_id"]) / "trigger.json",
        {
            "run_type": str(getattr(dag_run, "run_type", "")),
            "asset_events": reasons,
            "params": effective_params(context),
        },
    )


def stage(fn: Callable, **task_args: Any):
    """The Airflow task that runs ``fn``, a stage's ``run`` (or another of its task functions):
    ``stage(stages.curate.run)(collect=collected)``. Its task id is the stage's name
    (``stages.task_id``), its outlets the assets the stage declares; ``task_args`` go to ``task``
    (``queue=...``)."""
    from airflow.sdk import task

    from lmchain import stages
    from lmchain.assets import BY_NAME

    outlets = [BY_NAME[a] for a in stages.module_of(fn).ASSETS] if fn.__name__ == "run" else []
    return task(task_id=stages.task_id(fn), outlets=outlets, **task_args)(task_callable(fn))


def task_callable(fn: Callable) -> Callable[..., Any]:
    """What the task calls: the run's params and the upstream manifests (XCom) in, through the one
    runner, to ``fn``; its manifest out. ``stage_run`` is ``fn``: one jump from a task to its code."""
    from lmchain import stages

    module = stages.module_of(fn)

    def call(**upstream: Any) -> Any:  # Airflow passes the task context along with the upstream manifests
        if module in stages.FEEDBACK:
            return _run_feedback_task(fn, upstream)
        return _run_pipeline_task(fn, upstream)

    call.__name__ = call.__qualname__ = stages.task_id(fn)
    call.__doc__ = module.__doc__ if fn.__name__ == "run" else fn.__doc__
    call.stage_run = fn  # type: ignore[attr-defined]
    return call


def _arguments(fn: Callable, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(upstream manifests, the function's own arguments) out of what Airflow passed."""
    from lmchain.stages.runner import extra_parameters, reads

    return ({u: given[u] for u in reads(fn) if u in given}, {k: given[k] for k in extra_parameters(fn) if k in given})


def _run_pipeline_task(fn: Callable, given: dict[str, Any]) -> Any:
    """One task of ``lmchain_pipeline``.

    Bad input (``LmchainError``) fails the task without retries: retrying cannot fix a wrong
    path or key, and the message is what the user needs to see. A training job that was killed
    or crashed (``retryable``) fails the attempt normally, so Airflow's retries rerun it and the
    job resumes from its latest checkpoint.
    """
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from lmchain import stages
    from lmchain.errors import LmchainError
    from lmchain.params import should_skip
    from lmchain.stages.runner import run_stage

    stage = stages.name(stages.module_of(fn))
    context = get_current_context()
    params = effective_params(context)
    upstream, kwargs = _arguments(fn, given)
    home = Home.from_env()  # the task's process: its environment names the home
    try:
        cfg = _config(params, window_overrides(context))
        if stage == "collect":
            _record_trigger(context, home)
            if params.get("dry_run"):
                from lmchain.cli import preflight

                preflight(cfg)
                raise AirflowSkipException("dry run: recipe, params and input files are valid; nothing ran")
        skip = should_skip(stage, params)
        if skip:
            raise AirflowSkipException(f"{stage} skipped: {skip}")
        manifest = run_stage(fn, cfg, context["run_id"], upstream, home, **kwargs)
        if stage == "collect" and cfg.collect.modified_after and not manifest["counts"].get("records"):
            # A quiet night: nothing arrived, so there is nothing to retrain on (not a failure).
            raise AirflowSkipException(
                f"no new data between {cfg.collect.modified_after} and "
                f"{cfg.collect.modified_before}; the rest of the run is skipped"
            )
        return manifest
    except LmchainError as exc:
        record_error(home, context["run_id"], stage, str(exc))
        if getattr(exc, "retryable", False):
            raise
        raise AirflowFailException(f"{stage}: {exc}") from exc


def _run_feedback_task(fn: Callable, given: dict[str, Any]) -> dict[str, Any]:
    """One task of ``lmchain_feedback``; ``decide`` turns a retrain decision into an asset event."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from lmchain import stages
    from lmchain.errors import LmchainError
    from lmchain.stages.runner import run_stage

    stage = stages.name(stages.module_of(fn))
    context = get_current_context()
    upstream, kwargs = _arguments(fn, given)
    home = Home.from_env()
    try:
        manifest = run_stage(fn, _config(context["params"]), context["run_id"], upstream, home, **kwargs)
    except LmchainError as exc:
        record_error(home, context["run_id"], f"feedback_{stage}", str(exc))
        raise AirflowFailException(f"feedback {stage}: {exc}") from exc
    if stage == "decide":
        if not manifest["info"]["trigger"]:
            # Skipped: no asset event, so lmchain_pipeline is not scheduled.
            raise AirflowSkipException(manifest["info"]["reason"])
        from lmchain.assets import FEEDBACK_LABELS

        params = context["params"]
        context["outlet_events"][FEEDBACK_LABELS].extra = {
            "reason": manifest["info"]["reason"],
            "feedback_run_id": context["run_id"],
            "recipe": params.get("recipe"),
            "overrides": list(params.get("overrides") or []),
        }
    return manifest


def record_error(home: Home, run_id: str, stage: str, message: str) -> None:
    """Keep the user-facing message beside the run, where `lmchain demo` reads it back."""
    from lmchain.artifacts import write_json

    write_json(home.run_dir(run_id) / "error.json", {"stage": stage, "message": message})
