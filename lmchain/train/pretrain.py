"""Pretraining pieces: the corpus, tokenizer choice, world size and step count, the DeepSpeed
config, the job key, MLflow metrics. The ``pretrain`` stage that puts them together is
:mod:`lmchain.stages.pretrain`.

Steps: corpus (texts of the labelled validation and test splits left out, so the model never
sees evaluation text, even unlabelled) -> tokenizer (the base model's, or one trained on the
corpus and cached by its hash) -> packed blocks -> DeepSpeed config -> ``deepspeed`` job running
:mod:`lmchain.train.pretrain_worker` -> held-out LM metrics -> MLflow.

The job's packed data and checkpoints live in ``<run>/pretrain.work/<key>/``, outside the
stage's temp folder (which a new attempt clears), keyed by everything that shapes training:
an Airflow retry of a killed job finds the same key and resumes from the latest checkpoint; a
changed corpus or setting gets a fresh key and starts over.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from lmchain.artifacts import read_jsonl, sha256_text
from lmchain.config import PretrainConfig
from lmchain.errors import ConfigError
from lmchain.train.launcher import TrainingFailed

WORKER = "lmchain.train.pretrain_worker"
# Settings that do not change what is trained: a retry may change them and still resume.
NOT_IN_KEY = (
    "timeout_s",
    "checkpoint_every",
    "keep_checkpoints",
    "peak_tflops",
    "threads",
    "enabled",
    "hostfile",
    "allow_worse_perplexity",
)


def held_out_hashes(annotate: dict | None) -> set[str]:
    if not annotate:
        return set()
    return {sha256_text(r["text"]) for split in ("validation", "test") for r in read_jsonl(annotate["outputs"][split])}


def held_out_texts(annotate: dict | None, limit: int = 512) -> list[str]:
    """Validation texts: never trained on, so they measure the language model honestly."""
    if not annotate:
        return []
    return [r["text"] for r in read_jsonl(annotate["outputs"]["validation"])][:limit]


def write_corpus(corpus: str, held_out: set[str], max_texts: int | None, path: Path) -> tuple[int, int]:
    n_kept = n_held = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in read_jsonl(corpus):
            if max_texts is not None and n_kept >= max_texts:
                break
            if sha256_text(rec["text"]) in held_out:
                n_held += 1
                continue
            fh.write(json.dumps({"text": rec["text"]}, ensure_ascii=False) + "\n")
            n_kept += 1
    return n_kept, n_held


def choose_tokenizer(cfg: PretrainConfig, base: dict, objective: str, corpus: Path, cache: Path) -> dict[str, Any]:
    """-> {"path", "trained", "reused", "kind"}: the base model's tokenizer or one trained on ``corpus``."""
    from lmchain.train import tokenizer

    train = cfg.tokenizer == "train" or (cfg.tokenizer == "auto" and base["model"] is None)
    if not train:
        if not base["tokenizer"]:
            raise ConfigError(
                f"pretrain.tokenizer: base model '{cfg.base_model}' has no tokenizer of its own; "
                "set pretrain.tokenizer to 'train' (or 'auto')"
            )
        return {"path": base["tokenizer"], "trained": False, "reused": False, "kind": "base"}
    if base["model"] is not None:
        raise ConfigError(
            f"pretrain.tokenizer: 'train' gives new token ids, which the weights of "
            f"'{cfg.base_model}' do not know; use 'base' when continuing from weights, or train a "
            "named size from scratch"
        )
    kind = "wordpiece" if objective == "mlm" else "bpe"
    path, reused = tokenizer.trained_for(corpus, kind, cfg.tokenizer_vocab_size, cache, cfg.tokenizer_lowercase)
    return {"path": str(path), "trained": True, "reused": reused, "kind": kind}


def world_size(cfg: PretrainConfig) -> int:
    """Ranks over all machines: ``ranks`` per machine times the machines of the hostfile used."""
    if not cfg.hostfile:
        return cfg.ranks
    hosts = [
        line.split()[0]
        for line in Path(cfg.hostfile).expanduser().read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return cfg.ranks * (min(cfg.num_nodes, len(hosts)) if cfg.num_nodes else len(hosts))


def total_steps(cfg: PretrainConfig, n_blocks: int, world: int) -> int:
    """Optimizer steps of the job: max_steps, or the epochs over the blocks each rank gets."""
    per_step = cfg.batch_size * cfg.gradient_accumulation
    steps_per_epoch = (n_blocks // world) // per_step
    if steps_per_epoch == 0:
        raise ConfigError(
            f"pretrain.batch_size: {n_blocks} blocks of {cfg.block_size} tokens over {world} rank(s) "
            f"give less than one step of {cfg.batch_size} x {cfg.gradient_accumulation} blocks per "
            "rank; lower batch_size, gradient_accumulation, block_size or ranks, or give more text"
        )
    return cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))


def deepspeed_config(cfg: PretrainConfig, on_gpu: bool, steps: int) -> dict[str, Any]:
    """ZeRO stage, precision (bf16 on GPUs, fp32 on CPU ranks), gradient accumulation and clipping,
    AdamW and a warm-up-then-decay schedule, all as DeepSpeed config: the job is what it says."""
    # DeepSpeed's warm-up schedules need at least 2 warm-up steps (they divide by log(warmup)).
    warmup = max(2, int(steps * cfg.warmup_ratio))
    if cfg.lr_schedule == "cosine":
        scheduler = {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": steps,
                "warmup_num_steps": warmup,
                "warmup_min_ratio": 0.0,
                "cos_min_ratio": 0.0,
                "warmup_type": "linear",
            },
        }
    else:
        scheduler = {
            "type": "WarmupDecayLR",
            "params": {
                "total_num_steps": steps,
                "warmup_num_steps": warmup,
                "warmup_min_lr": 0.0,
                "warmup_max_lr": cfg.learning_rate,
                "warmup_type": "linear",
            },
        }
    # torch's AdamW: DeepSpeed's own Adam kernels need a C++/CUDA build at first use.
    optimizer_params = {
        "lr": cfg.learning_rate,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": cfg.weight_decay,
        "torch_adam": True,
    }
    if on_gpu:
        optimizer_params["fused"] = True  # torch's fused CUDA AdamW
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation,
        "gradient_clipping": cfg.gradient_clipping,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": on_gpu},
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "scheduler": scheduler,
        "steps_per_print": 10**9,  # the worker logs progress itself
        "wall_clock_breakdown": False,
    }


def job_key(cfg: PretrainConfig, corpus_sha: str, tokenizer_path: str, objective: str, world: int) -> str:
    settings = {k: v for k, v in cfg.model_dump().items() if k not in NOT_IN_KEY}
    blob = json.dumps(
        {
            "settings": settings,
            "corpus": corpus_sha,
            "tokenizer": tokenizer_path,
            "objective": objective,
            "world": world,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Held-out LM metrics, measured on the step-0 model (suffix ``_before``) and on the trained one.
LM_METRICS = ("mlm_loss", "lm_loss", "perplexity", "mlm_accuracy", "next_token_accuracy")


class PretrainingRegressed(TrainingFailed):
    """Pretraining made held-out perplexity worse than at step 0: publishing the model would
    hand fine-tuning a worse start. Not retryable (the same job would do the same)."""


def held_out_metrics(model_dir: Path, texts: list[str], objective: str, cfg: PretrainConfig) -> dict[str, float]:
    """Held-out perplexity and masked-token (MLM) or next-token (CLM) top-1 accuracy of a model folder."""
    from lmchain.evaluate.lm import clm_metrics, mlm_metrics

    if objective == "mlm":
        lm = mlm_metrics(model_dir, texts, cfg.mlm_probability, cfg.max_length, seed=cfg.seed)
    else:
        lm = clm_metrics(model_dir, texts, cfg.max_length)
    return {k: v for k, v in lm.items() if k in LM_METRICS}


def check_not_worse(metrics: dict[str, Any], cfg: PretrainConfig) -> None:
    """Raise :class:`PretrainingRegressed` when held-out perplexity rose during pretraining
    (unless ``pretrain.allow_worse_perplexity``)."""
    before, after = metrics.get("perplexity_before"), metrics.get("perplexity")
    if before is None or after is None or not after > before or cfg.allow_worse_perplexity:
        return
    raise PretrainingRegressed(
        f"pretraining made held-out perplexity worse: {before:.1f} at step 0 (before training"
        f"{', LM head fitted' if metrics.get('head_warmup_steps') else ''}) -> {after:.1f} after "
        f"{metrics.get('steps')} steps; lower pretrain.learning_rate or give more steps or text, or set "
        "pretrain.allow_worse_perplexity=true to publish it anyway",
        retryable=False,
    )


def log_metrics(metrics: dict[str, Any]) -> None:
    """Loss curve, throughput, MFU and held-out LM metrics into the active MLflow run."""
    import mlflow

    for step, loss in metrics.get("losses", []):
        mlflow.log_metric("pretrain/loss", loss, step=int(step))
    for step, loss in metrics.get("head_warmup_losses", []):
        mlflow.log_metric("pretrain/head_warmup_loss", loss, step=int(step))
    for key in (
        "final_loss",
        "tokens_per_second",
        "samples_per_second",
        "mfu",
        "train_seconds",
        "wall_seconds",
        "resumed_from_step",
        "head_warmup_seconds",
        *LM_METRICS,
        *(f"{k}_before" for k in LM_METRICS),
    ):
        if metrics.get(key) is not None:
            mlflow.log_metric(f"pretrain/{key}", float(metrics[key]))
    if metrics.get("mfu") is None:
        mlflow.set_tag("pretrain.mfu", f"n/a on {metrics.get('device')} (set pretrain.peak_tflops to estimate)")
