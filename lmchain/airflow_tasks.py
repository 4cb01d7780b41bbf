"""The callable behind every task of ``lmchain_pipeline``; imported by the DAG at parse time.

It must stay light: nothing here imports a stage module, Airflow internals or ML libraries
until a task actually runs.
"""

from __future__ import annotations

from typing import Any

DEFAULT_RECIPE = "demo"


def params_schema() -> dict[str, Any]:
    """The trigger form: a recipe and dotted overrides."""
    from airflow.sdk import Param

    return {
        "recipe": Param(DEFAULT_RECIPE, type="string", title="Recipe",
                        description="A YAML recipe in configs/ (demo, tiny) or a path to one."),
        "overrides": Param([], type="array", items={"type": "string"}, title="Overrides",
                           description="Dotted key=value overrides, e.g. finetune.epochs=2 or "
                                       "annotate.max_examples=2000."),
    }


def stage_task(stage: str, **upstream: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` for the current DAG run with the run's recipe and overrides.

    Bad input (``LmchainError``) fails the task without retries: retrying cannot fix a wrong
    path or key, and the message is what the user needs to see.
    """
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException

    from lmchain.config import load_config
    from lmchain.errors import LmchainError
    from lmchain.pipeline import run_stage

    context = get_current_context()
    params = context["params"]
    try:
        cfg = load_config(params.get("recipe") or DEFAULT_RECIPE, list(params.get("overrides") or []))
        return run_stage(stage, cfg, context["run_id"], upstream)
    except LmchainError as exc:
        record_error(context["run_id"], stage, str(exc))
        raise AirflowFailException(f"{stage}: {exc}") from exc


def record_error(run_id: str, stage: str, message: str) -> None:
    """Keep the user-facing message beside the run, where `lmchain demo` reads it back."""
    from lmchain.artifacts import RunContext, write_json

    write_json(RunContext(run_id).run_dir / "error.json", {"stage": stage, "message": message})
