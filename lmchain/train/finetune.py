"""Fine-tune: sequence classification on the labelled train split, as a DeepSpeed job.

The worker scores the validation split while it trains, keeps the weights with the best
macro-F1 and stops early when they stop improving; the saved model holds those weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lmchain import registry
from lmchain.artifacts import Manifest, RunContext, StageOutput
from lmchain.config import FinetuneConfig, LabelSource
from lmchain.train import models
from lmchain.train.launcher import launch


def labelled_jsonl(src: LabelSource, names: list[str], path: Path) -> Path:
    """A label file (TSV/CSV/JSONL, ``${SST2}`` expanded) as ``{"text", "label"}`` lines for the
    worker. Labels are names from ``names`` or their ids; other rows are skipped and counted."""
    from lmchain.collect.files import read_file, resolve_files
    from lmchain.config import FileSource
    from lmchain.errors import InputError

    files = resolve_files(FileSource(path=src.path, text_field=src.text_field))
    if not files:
        raise InputError(f"finetune.report_on: no file at {src.path}; give a labelled TSV/CSV/JSONL file")
    kept = skipped = 0
    with open(path, "w", encoding="utf-8") as fh:
        for file in files:
            for _, text, extra, bad in read_file(file, src.text_field):
                raw = str(extra.get(src.label_field, "")).strip()
                label = names.index(raw) if raw in names else int(raw) if raw.isdigit() else None
                if bad or label is None or label >= len(names):
                    skipped += 1
                    continue
                if src.limit is not None and kept >= src.limit:
                    break
                fh.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
                kept += 1
    if kept == 0:
        raise InputError(f"finetune.report_on: no usable rows in {src.path} (text column '{src.text_field}', "
                         f"label column '{src.label_field}' holding {names} or their ids)")
    return path


def train_classifier(cfg: FinetuneConfig, base: dict, train: str, validation: str | None, names: list[str],
                     model_dir: Path, job_dir: Path) -> dict:
    """Launch the job; -> the worker's metrics. Used by the stage and by bench/finetune_throughput.py."""
    job_dir.mkdir(parents=True, exist_ok=True)
    report = str(labelled_jsonl(cfg.report_on, names, job_dir / "report.jsonl")) if cfg.report_on else None
    spec = {"task": "cls", **base, "train_file": train, "validation_file": validation, "report_file": report,
            "label_names": names, "output_dir": str(model_dir)}
    return launch(spec, cfg, job_dir)


def log_curves(run_id: str, metrics: dict) -> None:
    """Validation curve and best-checkpoint figures, beside the loss curve log_training wrote."""
    c = registry.client()
    for step, f1, acc in metrics.get("validation_curve", []):
        c.log_metric(run_id, "finetune/val_macro_f1", f1, step=int(step))
        c.log_metric(run_id, "finetune/val_accuracy", acc, step=int(step))
    for key in ("best_macro_f1", "best_accuracy", "best_step", "report_accuracy", "report_macro_f1",
                "trainable_parameters", "eval_seconds"):
        if metrics.get(key) is not None:
            c.log_metric(run_id, f"finetune/{key}", float(metrics[key]))


def run(cfg: FinetuneConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """The stage: one fine-tune, or with ``finetune.search`` one trial per setting and the best of them
    (in Airflow the trials are mapped tasks calling :func:`run_trial`, then :func:`select`)."""
    from lmchain.train import hpsearch

    trials = [run_trial(cfg, ctx, inputs, i).to_dict() for i in range(hpsearch.trial_count(cfg.search))]
    return select(cfg, ctx, trials)


def run_trial(cfg: FinetuneConfig, ctx: RunContext, inputs: dict, index: int) -> Manifest:
    """Trial ``index`` of the search, in its own stage folder and MLflow run."""
    from lmchain.train import hpsearch

    settings = hpsearch.trial_settings(cfg.search)
    if not settings:  # no search: the single fine-tune is the stage itself
        return train_stage(cfg, ctx, inputs, "finetune")
    trial = hpsearch.trial_config(cfg, settings[index])
    return train_stage(trial, ctx, inputs, hpsearch.trial_stage(index), {"trial": index, "settings": settings[index]})


def select(cfg: FinetuneConfig, ctx: RunContext, trials: list[dict]) -> Manifest:
    """The ``finetune`` stage from the trials' manifests (a single fine-tune passes through)."""
    from lmchain.train import hpsearch

    if len(trials) == 1 and trials[0]["stage"] == "finetune":
        return Manifest.from_dict(trials[0])
    return hpsearch.select(cfg, ctx, trials)


def train_stage(cfg: FinetuneConfig, ctx: RunContext, inputs: dict, stage: str,
                trial: dict | None = None) -> Manifest:
    """One fine-tune into stage folder ``stage``: the job, MLflow params/curves, the manifest."""
    labelled = inputs["annotate"]["outputs"]
    names = json.loads(Path(labelled["labels"]).read_text())["names"]
    if cfg.base_model == "pretrain":
        base = models.resolve(inputs["pretrain"]["outputs"]["model"])
    else:
        base = models.resolve(cfg.base_model)
    with StageOutput(ctx, stage, dataclasses.asdict(cfg)) as out:
        metrics = train_classifier(cfg, base, labelled["train"], labelled.get("validation"), names,
                                   out.path("model"), out.path("job"))
        params = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("report_on", "lora_targets", "search")}
        if cfg.method == "lora":
            params["lora_targets"] = ",".join(cfg.lora_targets)
        params.update({"base_model": base["model"] or cfg.base_model, "steps": metrics["steps"]})
        mlflow_run = registry.log_training(ctx, ctx.experiment, "finetune", metrics, params, run_name=stage)
        log_curves(mlflow_run, metrics)
        out.output("model", "model")
        out.manifest.inputs = {"train": labelled["train"], "validation": labelled.get("validation"),
                               "base_model": base["model"] or cfg.base_model}
        keys = ("final_loss", "samples_per_second", "train_seconds", "best_macro_f1", "best_accuracy",
                "report_accuracy", "report_macro_f1")
        out.manifest.metrics = {k: metrics[k] for k in keys if metrics.get(k) is not None}
        out.manifest.info = {"label_names": names, "world_size": metrics["world_size"],
                             "device": metrics["device"], "steps": metrics["steps"], "method": cfg.method,
                             "trainable_parameters": metrics["trainable_parameters"],
                             "best_step": metrics.get("best_step"), "stopped_early": metrics.get("stopped_early"),
                             "mlflow_run_id": mlflow_run, **(trial or {})}
    return out.manifest
