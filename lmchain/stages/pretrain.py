"""The ``pretrain`` stage: masked-LM (BERT-style) or causal-LM (GPT-2-style) training on the gated corpus, as a
resumable DeepSpeed job.

Steps: corpus (texts of the labelled validation and test splits left out, so the model never
sees evaluation text, even unlabelled) -> tokenizer (the base model's, or one trained on the
corpus and cached by its hash) -> packed blocks -> DeepSpeed config -> ``deepspeed`` job running
:mod:`lmchain.train.pretrain_worker` -> held-out LM metrics before (the step-0 model the job saved:
the base model, its LM head fitted if it had none) and after training; the stage fails when
pretraining made held-out perplexity worse -> MLflow. The steps' helpers are in
:mod:`lmchain.train.pretrain`.

The job's packed data and checkpoints live in ``<run>/pretrain.work/<key>/``, outside the
stage's temp folder (which a new attempt clears), keyed by everything that shapes training:
an Airflow retry of a killed job finds the same key and resumes from the latest checkpoint; a
changed corpus or setting gets a fresh key and starts over.
"""

from __future__ import annotations

import json
import shutil

from lmchain.artifacts import Manifest, RunContext, StageOutput, sha256_file
from lmchain.config import PretrainConfig

CONFIG = "pretrain"
# The labelled splits: their validation and test texts stay out of the corpus.
READS = ("gate", "gate_labels")
ASSETS: tuple[str, ...] = ()


def run(cfg: PretrainConfig, ctx: RunContext, inputs: dict) -> Manifest:
    from lmchain import registry
    from lmchain.train import models
    from lmchain.train.launcher import gpu_available, launch
    from lmchain.train.pretrain import (
        WORKER,
        check_not_worse,
        choose_tokenizer,
        deepspeed_config,
        held_out_hashes,
        held_out_metrics,
        held_out_texts,
        job_key,
        log_metrics,
        total_steps,
        world_size,
        write_corpus,
    )

    base = models.resolve(cfg.base_model)
    with StageOutput(ctx, "pretrain", cfg.model_dump()) as out:
        if not cfg.enabled:
            out.manifest.outputs = {"model": base["model"] or cfg.base_model}
            out.manifest.info = {"skipped": True, "base_model": cfg.base_model}
            return out.manifest
        objective = models.objective_for(base) if cfg.objective == "auto" else cfg.objective

        # ------------------------------------------------ corpus and tokenizer
        corpus = inputs["gate"]["outputs"]["records"]
        n_kept, n_held = write_corpus(
            corpus, held_out_hashes(inputs.get("annotate")), cfg.max_texts, out.path("corpus.jsonl")
        )
        corpus_sha = sha256_file(out.path("corpus.jsonl"))
        tok = choose_tokenizer(cfg, base, objective, out.path("corpus.jsonl"), ctx.home.tokenizers)

        # ------------------------------------------------ packed blocks (kept across attempts)
        from lmchain.train import packing

        world = world_size(cfg)
        work = ctx.run_dir / "pretrain.work" / job_key(cfg, corpus_sha, tok["path"], objective, world)
        data_dir = work / "data"
        if (data_dir / packing.META).is_file():
            meta = json.loads((data_dir / packing.META).read_text())
        else:
            meta = packing.pack(out.path("corpus.jsonl"), tok["path"], cfg.block_size, data_dir, objective)
        steps = total_steps(cfg, meta["n_blocks"], world)

        # ------------------------------------------------ the DeepSpeed job
        on_gpu = gpu_available()
        spec = {
            **base,
            "size": cfg.base_model if base["model"] is None else None,
            "objective": objective,
            "tokenizer": tok["path"],
            "data_dir": str(data_dir),
            "max_steps": steps,
            "checkpoint_dir": str(work / "checkpoints"),
            "seen_dir": str(work / "seen"),
            "initial_dir": str(work / "initial"),
            "output_dir": str(out.path("model")),
        }
        params = {
            "base_model": cfg.base_model,
            "objective": objective,
            "ranks": cfg.ranks,
            "world_size": world,
            "zero_stage": cfg.zero_stage,
            "batch_size": cfg.batch_size,
            "gradient_accumulation": cfg.gradient_accumulation,
            "learning_rate": cfg.learning_rate,
            "block_size": cfg.block_size,
            "steps": steps,
            "texts": n_kept,
            "blocks": meta["n_blocks"],
            "tokenizer": tok["kind"],
            "vocab_size": meta["vocab_size"],
            "lr_schedule": cfg.lr_schedule,
            "warmup_ratio": cfg.warmup_ratio,
            "mlm_probability": cfg.mlm_probability,
            "head_warmup_steps": cfg.head_warmup_steps,
            "precision": "bf16" if on_gpu else cfg.precision,
        }
        with registry.stage_run(ctx, ctx.experiment, "pretrain", log_system_metrics=True) as mlflow_run:
            import mlflow

            mlflow.log_params({f"pretrain.{k}": v for k, v in params.items()})
            metrics = launch(spec, cfg, out.path("job"), module=WORKER, ds=deepspeed_config(cfg, on_gpu, steps))
            heldout = held_out_texts(inputs.get("annotate"))
            if heldout:
                before = held_out_metrics(work / "initial", heldout, objective, cfg)
                metrics.update({f"{k}_before": v for k, v in before.items()})
                metrics.update(held_out_metrics(out.path("model"), heldout, objective, cfg))
            log_metrics(metrics)
            check_not_worse(metrics, cfg)
        for done in ("checkpoints", "initial"):  # the export is the product
            if (work / done).exists():
                shutil.rmtree(work / done)
        (out.path("model") / "lmchain-pretrain.json").write_text(
            json.dumps(
                {"objective": objective, "base_model": cfg.base_model, "tokenizer": tok, "steps": steps}, indent=2
            )
        )
        out.output("model", "model")
        out.manifest.inputs = {"corpus": corpus}
        out.manifest.counts = {
            "texts": n_kept,
            "held_out_texts": n_held,
            "blocks": meta["n_blocks"],
            "tokens": meta["tokens"],
        }
        out.manifest.metrics = {
            k: metrics[k]
            for k in (
                "first_loss",
                "final_loss",
                "samples_per_second",
                "tokens_per_second",
                "mfu",
                "train_seconds",
                "head_warmup_seconds",
                "perplexity_before",
                "perplexity",
                "mlm_accuracy_before",
                "mlm_accuracy",
                "next_token_accuracy_before",
                "next_token_accuracy",
            )
            if metrics.get(k) is not None
        }
        out.manifest.info = {
            "base_model": cfg.base_model,
            "objective": objective,
            "world_size": metrics["world_size"],
            "device": metrics["device"],
            "steps": metrics["steps"],
            "resumed_from_step": metrics["resumed_from_step"],
            "head_missing_keys": metrics.get("head_missing_keys", []),
            "head_tied": metrics.get("head_tied", False),
            "head_warmup_steps": metrics.get("head_warmup_steps", 0),
            "tokenizer": tok,
            "work_dir": str(work),
            "mlflow_run_id": mlflow_run.info.run_id,
        }
    return out.manifest
