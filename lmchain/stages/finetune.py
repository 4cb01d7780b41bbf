"""The ``finetune`` stage: sequence classification on the labelled train split, as a DeepSpeed job
(:mod:`lmchain.train.finetune`), or with ``finetune.search`` one job per setting and the best.

Its three entry points are three DAG tasks, named ``finetune_<function>`` (``run``: ``finetune``):

- :func:`trials` (task ``finetune_trials``): the indices of the search's trials ([0]: no search);
- :func:`trial` (task ``finetune_trial``, mapped over those indices): one trial, in its own stage
  folder and MLflow run (without a search: the single fine-tune, in ``finetune/``);
- :func:`run` (task ``finetune``): the trial with the best validation macro-F1 (a single
  fine-tune passes through). Without ``trials`` (the CLI, the tests) it runs every trial first.

The worker scores the validation split while it trains, keeps the weights with the best
macro-F1 and stops early when they stop improving; the saved model holds those weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmchain.artifacts import Manifest, RunContext, StageOutput
from lmchain.config import FinetuneConfig

CONFIG = "finetune"
READS = ("pretrain", "gate_labels")
ASSETS: tuple[str, ...] = ()


def trials(cfg: FinetuneConfig, ctx: RunContext, inputs: dict) -> list[int]:
    """The indices of the search's trials, which the trial task is mapped over ([0]: no search)."""
    from lmchain.train.hpsearch import trial_count

    return list(range(trial_count(cfg.search)))


# The map needs only the recipe: it runs beside the chain, not after pretrain. runner.reads() takes a
# function's own `reads` over its module's READS; mypy knows no attributes on functions.
trials.reads = ()  # type: ignore[attr-defined]


def trial(cfg: FinetuneConfig, ctx: RunContext, inputs: dict, index: int) -> Manifest:
    """Trial ``index`` of the search, in its own stage folder and MLflow run."""
    from lmchain.train import hpsearch

    settings = hpsearch.trial_settings(cfg.search)
    if not settings:  # no search: the single fine-tune is the stage itself
        return _train(cfg, ctx, inputs, "finetune")
    config = hpsearch.trial_config(cfg, settings[index])
    return _train(config, ctx, inputs, hpsearch.trial_stage(index), {"trial": index, "settings": settings[index]})


def run(cfg: FinetuneConfig, ctx: RunContext, inputs: dict, trials: list[dict] | None = None) -> Manifest:
    """The ``finetune`` manifest: the best of the ``trials``' manifests (a single fine-tune passes
    through). Without ``trials``, every trial runs here first, one after the other."""
    from lmchain.train import hpsearch

    if trials is None:
        trials = [trial(cfg, ctx, inputs, i).to_dict() for i in range(hpsearch.trial_count(cfg.search))]
    trials = list(trials)
    if len(trials) == 1 and trials[0]["stage"] == "finetune":
        return Manifest.from_dict(trials[0])
    return hpsearch.select(cfg, ctx, trials)


def _train(cfg: FinetuneConfig, ctx: RunContext, inputs: dict, stage: str, trial: dict | None = None) -> Manifest:
    """One fine-tune into stage folder ``stage``: the job, MLflow params/curves, the manifest."""
    from lmchain import registry
    from lmchain.train import models
    from lmchain.train.finetune import log_curves, train_classifier

    labelled = inputs["annotate"]["outputs"]
    names = json.loads(Path(labelled["labels"]).read_text())["names"]
    if cfg.base_model == "pretrain":
        base = models.resolve(inputs["pretrain"]["outputs"]["model"])
    else:
        base = models.resolve(cfg.base_model)
    with StageOutput(ctx, stage, cfg.model_dump()) as out:
        metrics = train_classifier(
            cfg, base, labelled["train"], labelled.get("validation"), names, out.path("model"), out.path("job")
        )
        params = {k: v for k, v in cfg.model_dump().items() if k not in ("report_on", "lora_targets", "search")}
        if cfg.method == "lora":
            params["lora_targets"] = ",".join(cfg.lora_targets)
        params.update({"base_model": base["model"] or cfg.base_model, "steps": metrics["steps"]})
        mlflow_run = registry.log_training(ctx, ctx.experiment, "finetune", metrics, params, run_name=stage)
        log_curves(mlflow_run, metrics, ctx.home)
        out.output("model", "model")
        out.manifest.inputs = {
            "train": labelled["train"],
            "validation": labelled.get("validation"),
            "base_model": base["model"] or cfg.base_model,
        }
        keys = (
            "final_loss",
            "samples_per_second",
            "train_seconds",
            "best_macro_f1",
            "best_accuracy",
            "report_accuracy",
            "report_macro_f1",
        )
        out.manifest.metrics = {k: metrics[k] for k in keys if metrics.get(k) is not None}
        out.manifest.info = {
            "label_names": names,
            "world_size": metrics["world_size"],
            "device": metrics["device"],
            "steps": metrics["steps"],
            "method": cfg.method,
            "trainable_parameters": metrics["trainable_parameters"],
            "best_step": metrics.get("best_step"),
            "best_epoch": metrics.get("best_epoch"),
            "epochs_run": metrics.get("epochs_run"),
            "steps_per_epoch": metrics.get("steps_per_epoch"),
            "stopped_early": metrics.get("stopped_early"),
            "stop_reason": metrics.get("stop_reason"),
            "mlflow_run_id": mlflow_run,
            **(trial or {}),
        }
    return out.manifest
