"""Hyperparameter search for the fine-tune stage: trials and the choice of the best.

A trial is the fine-tune stage with some settings changed (``finetune.search.space``); it
writes its own stage folder ``finetune_trial_<i>/`` and MLflow child run. The choice reads every
trial's manifest and publishes the ``finetune`` stage, whose model is the trial with the best
validation macro-F1 (ties: the earlier trial), so evaluate, register and deploy work the same
with or without a search. In Airflow the trials are mapped tasks (dynamic task mapping, one per
trial, on the GPU queue); the CLI runs them one after another through the same functions.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from lmchain.artifacts import Manifest, RunContext, StageOutput, write_json
from lmchain.config import FinetuneConfig, SearchConfig, replace
from lmchain.errors import ConfigError


def trial_settings(search: SearchConfig) -> list[dict[str, Any]]:
    """The settings of each trial, in a fixed order; ``[]`` when the search is off."""
    if search.method == "off":
        return []
    keys = sorted(search.space)
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*(search.space[k] for k in keys))]
    if search.method == "random":
        # Draw without repeats: on a small space, `trials` may cover the whole grid.
        grid = random.Random(search.seed).sample(grid, min(search.trials, len(grid)))
    if len(grid) > search.max_trials:
        raise ConfigError(
            f"config key 'finetune.search.space': {len(grid)} trials exceed "
            f"finetune.search.max_trials={search.max_trials}; use method=random with fewer trials "
            "or raise max_trials"
        )
    return grid


def trial_count(search: SearchConfig) -> int:
    """Trials to run: one per setting, or 1 (the plain fine-tune) when the search is off."""
    return len(trial_settings(search)) or 1


def trial_config(cfg: FinetuneConfig, settings: dict[str, Any]) -> FinetuneConfig:
    """The fine-tune config of one trial (validated like any other config)."""
    try:
        return replace(cfg, **settings, search=SearchConfig())
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"config key 'finetune.search.space': trial {settings} is not a valid fine-tune config: {exc}"
        ) from exc


def trial_stage(index: int) -> str:
    return f"finetune_trial_{index:02d}"


def score(manifest: dict[str, Any]) -> float:
    """What the search maximises: the trial's best validation macro-F1."""
    value = manifest["metrics"].get("best_macro_f1")
    if value is None:
        raise ConfigError(
            "finetune.search needs a validation split to compare trials (annotate.validation_fraction "
            "> 0); no trial reported a validation macro-F1"
        )
    return float(value)


def select(cfg: FinetuneConfig, ctx: RunContext, trials: list[dict[str, Any]]) -> Manifest:
    """Publish the ``finetune`` stage pointing at the best trial's model, with the whole table."""
    from lmchain import registry

    if not trials:
        raise ConfigError("finetune.search: no trial finished; nothing to choose from")
    ranked = sorted(range(len(trials)), key=lambda i: (-score(trials[i]), trials[i]["info"]["trial"]))
    best = trials[ranked[0]]
    table = [
        {
            "trial": t["info"]["trial"],
            **t["info"]["settings"],
            "val_macro_f1": score(t),
            "val_accuracy": t["metrics"].get("best_accuracy"),
            "steps": t["info"]["steps"],
            "train_seconds": t["metrics"].get("train_seconds"),
            "model": t["outputs"]["model"],
        }
        for t in sorted(trials, key=lambda t: t["info"]["trial"])
    ]
    with StageOutput(ctx, "finetune", cfg.model_dump()) as out:
        write_json(out.output("search", "search.json"), {"best_trial": best["info"]["trial"], "trials": table})
        # Manifest.inputs is typed dict[str, str] but a search also lists its trials' models (lineage
        # reads inputs as strings: widening the type means teaching lineage about lists first)
        out.manifest.inputs = {**best["inputs"], "trials": [t["outputs"]["model"] for t in trials]}  # type: ignore[dict-item]
        out.manifest.outputs["model"] = best["outputs"]["model"]
        out.manifest.metrics = dict(best["metrics"])
        out.manifest.info = {
            **best["info"],
            "search": {
                "method": cfg.search.method,
                "trials": len(trials),
                "best_trial": best["info"]["trial"],
                "best_settings": best["info"]["settings"],
            },
        }
        figure = out.output("search_plot", "search.png")
        plot_trials(table, figure)
        with registry.stage_run(ctx, ctx.experiment, "finetune_search"):
            import mlflow

            mlflow.log_params(
                {
                    "search.method": cfg.search.method,
                    "search.trials": len(trials),
                    **{f"search.best.{k}": v for k, v in best["info"]["settings"].items()},
                }
            )
            mlflow.log_metric("search/best_val_macro_f1", score(best))
            mlflow.log_table({k: [row.get(k) for row in table] for k in table[0]}, "search/trials.json")
            mlflow.log_artifact(str(figure), "search")
    return out.manifest


def plot_trials(table: list[dict[str, Any]], path) -> None:
    """Validation macro-F1 per trial, the best one highlighted, settings as tick labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [row["val_macro_f1"] for row in table]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    keys = [
        k for k in table[0] if k not in ("trial", "val_macro_f1", "val_accuracy", "steps", "train_seconds", "model")
    ]
    labels = ["\n".join(f"{k}={row[k]}" for k in keys) for row in table]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(table)), 4.0))
    ax.bar(range(len(table)), scores, color=["tab:green" if i == best else "tab:gray" for i in range(len(table))])
    ax.set_xticks(range(len(table)), labels, fontsize=7)
    ax.set_ylabel("validation macro-F1")
    low = min(scores)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(scores) + 0.02))
    ax.set_title(f"Hyperparameter search: {len(table)} trials, best #{table[best]['trial']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
