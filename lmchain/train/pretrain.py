"""Pretrain: masked-LM training on the gated corpus, as a DeepSpeed job.

Texts of the labelled validation and test splits are left out of the pretraining corpus, so
the model never sees evaluation text, even unlabelled.
"""

from __future__ import annotations

import dataclasses
import json

from lmchain import registry
from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, sha256_text
from lmchain.config import PretrainConfig
from lmchain.train import models
from lmchain.evaluate.lm import mlm_metrics
from lmchain.train.launcher import launch


def held_out_hashes(annotate: dict | None) -> set[str]:
    if not annotate:
        return set()
    return {sha256_text(r["text"]) for split in ("validation", "test") for r in read_jsonl(annotate["outputs"][split])}


def held_out_texts(annotate: dict | None, limit: int = 512) -> list[str]:
    """Validation texts: never trained on, so they measure the language model honestly."""
    if not annotate:
        return []
    return [r["text"] for r in read_jsonl(annotate["outputs"]["validation"])][:limit]


def run(cfg: PretrainConfig, ctx: RunContext, inputs: dict) -> Manifest:
    base = models.resolve(cfg.base_model)
    with StageOutput(ctx, "pretrain", dataclasses.asdict(cfg)) as out:
        if not cfg.enabled:
            out.manifest.outputs = {"model": base["model"] or cfg.base_model}
            out.manifest.info = {"skipped": True, "base_model": cfg.base_model}
            return out.manifest
        corpus = inputs["gate"]["outputs"]["records"]
        held_out = held_out_hashes(inputs.get("annotate"))
        n_kept = n_held = 0
        with open(out.path("corpus.jsonl"), "w", encoding="utf-8") as fh:
            for rec in read_jsonl(corpus):
                if cfg.max_texts is not None and n_kept >= cfg.max_texts:
                    break
                if sha256_text(rec["text"]) in held_out:
                    n_held += 1
                    continue
                fh.write(json.dumps({"text": rec["text"]}, ensure_ascii=False) + "\n")
                n_kept += 1
        spec = {"task": "mlm", **base, "train_file": str(out.path("corpus.jsonl")),
                "output_dir": str(out.path("model")), "mlm_probability": cfg.mlm_probability}
        metrics = launch(spec, cfg, out.path("job"))
        heldout = held_out_texts(inputs.get("annotate"))
        if heldout:
            lm = mlm_metrics(out.path("model"), heldout, cfg.mlm_probability, cfg.max_length, seed=cfg.seed)
            metrics.update({k: v for k, v in lm.items() if k != "masked_tokens"})
        mlflow_run = registry.log_training(ctx, ctx.experiment, "pretrain", metrics,
                              {"base_model": cfg.base_model, "ranks": cfg.ranks, "zero_stage": cfg.zero_stage,
                               "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                               "steps": metrics["steps"], "texts": n_kept})
        out.output("model", "model")
        out.manifest.inputs = {"corpus": corpus}
        out.manifest.counts = {"texts": n_kept, "held_out_texts": n_held}
        out.manifest.metrics = {k: metrics[k] for k in ("final_loss", "samples_per_second", "train_seconds",
                                                         "perplexity", "mlm_accuracy") if k in metrics}
        out.manifest.info = {"base_model": cfg.base_model, "world_size": metrics["world_size"],
                             "device": metrics["device"], "steps": metrics["steps"], "mlflow_run_id": mlflow_run}
    return out.manifest
