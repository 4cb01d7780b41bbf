"""Fine-tune: sequence classification on the labelled train split, as a DeepSpeed job."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lmchain import registry
from lmchain.artifacts import Manifest, RunContext, StageOutput
from lmchain.config import FinetuneConfig
from lmchain.train import models
from lmchain.train.launcher import launch


def run(cfg: FinetuneConfig, ctx: RunContext, inputs: dict) -> Manifest:
    labelled = inputs["annotate"]["outputs"]
    names = json.loads(Path(labelled["labels"]).read_text())["names"]
    if cfg.base_model == "pretrain":
        base = models.resolve(inputs["pretrain"]["outputs"]["model"])
    else:
        base = models.resolve(cfg.base_model)
    with StageOutput(ctx, "finetune", dataclasses.asdict(cfg)) as out:
        spec = {"task": "cls", **base, "train_file": labelled["train"], "label_names": names,
                "output_dir": str(out.path("model"))}
        metrics = launch(spec, cfg, out.path("job"))
        mlflow_run = registry.log_training(ctx, ctx.experiment, "finetune", metrics,
                              {"base_model": base["model"] or cfg.base_model, "ranks": cfg.ranks,
                               "zero_stage": cfg.zero_stage, "batch_size": cfg.batch_size,
                               "learning_rate": cfg.learning_rate, "steps": metrics["steps"],
                               "epochs": cfg.epochs})
        out.output("model", "model")
        out.manifest.inputs = {"train": labelled["train"], "base_model": base["model"] or cfg.base_model}
        out.manifest.metrics = {k: metrics[k] for k in ("final_loss", "samples_per_second", "train_seconds")}
        out.manifest.info = {"label_names": names, "world_size": metrics["world_size"],
                             "device": metrics["device"], "steps": metrics["steps"], "mlflow_run_id": mlflow_run}
    return out.manifest
