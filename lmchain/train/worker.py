"""One fine-tuning rank, launched by the ``deepspeed`` launcher (never imported by the DAG).

Reads a :class:`~lmchain.train.job.FinetuneJob` written by :mod:`lmchain.train.launcher`, then:
data -> model -> DeepSpeed engine -> loop -> save. ``task`` is ``cls`` (sequence classification)
or ``ner`` (token classification: BIO tags per word, see :mod:`lmchain.train.ner`); pretraining
has its own worker, :mod:`lmchain.train.pretrain_worker`. Every rank reads the whole input and
keeps its own contiguous slice, so ranks see distinct data and take the same number of steps
(allreduce needs that). Batches are length-grouped and padded per batch (see
:mod:`lmchain.train.batching`). The ranks score the validation split together every
``eval_every`` steps, keep the weights with the best macro-F1 (``ner``: entity-level F1), stop
early after ``patience`` evaluations without gain and save the best weights. Rank 0 writes the
model folder and ``metrics.json``; MLflow logging happens in the parent task, so ranks need no
tracking server.

The pieces before the engine (:func:`encode`, :func:`plan_steps`, :func:`make_collate`,
:func:`build_model`) and the bookkeeping after it (:func:`final_metrics`) need no process group,
so the unit tests call them directly.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lmchain.train.batching import length_grouped_batches, sorted_batches, word_dropout
from lmchain.train.job import FinetuneJob, JobError, run_rank
from lmchain.train.optim import accuracy, balanced_class_weights, decay_groups, lr_factor, macro_f1

if TYPE_CHECKING:
    from lmchain.train.rank import Rank

TASKS = ("cls", "ner")


def read_rows(path: str | None) -> list[dict]:
    """The rows of a JSONL file the job names (none when it names none); a bad line is an error
    naming the file and the line."""
    from lmchain.artifacts import read_jsonl

    return list(read_jsonl(path)) if path else []


# ---------------------------------------------------------------- data


def encode(tokenizer, rows: list[dict], job: FinetuneJob) -> list[dict]:
    """Rows -> features (``input_ids``, ``attention_mask``, ``labels``)."""
    if not rows:
        return []
    if job.task == "ner":
        from lmchain.train.ner import encode_words

        return encode_words(tokenizer, rows, job.label_names, job.max_length)
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=job.max_length)
    return [
        {"input_ids": ids, "attention_mask": am, "labels": int(r["label"])}
        for ids, am, r in zip(enc["input_ids"], enc["attention_mask"], rows)
    ]


@dataclass
class Plan:
    """How the rank's share of the data becomes steps."""

    lengths: list[int]
    batch_size: int
    seed: int
    group: int  # length-grouping pool, in batches (1: no grouping)
    total_steps: int
    steps_per_epoch: int

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.batch_size, self.seed + epoch, group_batches=self.group)


def plan_steps(job: FinetuneJob, lengths: list[int], per_rank: int) -> Plan:
    """The rank's batches and the job's step count; a share smaller than one batch is a
    :class:`JobError` (every rank has the same share, so every rank says the same)."""
    group = job.group_batches if job.group_by_length else 1
    plan = Plan(lengths, job.batch_size, job.seed, group, 0, 0)
    plan.steps_per_epoch = len(plan.epoch_batches(0))
    if plan.steps_per_epoch == 0:
        raise JobError(
            f"{per_rank} examples per rank is less than one batch of {job.batch_size}; "
            "lower batch_size or ranks, or give more data"
        )
    plan.total_steps = job.max_steps or max(1, math.ceil(plan.steps_per_epoch * job.epochs))
    return plan


def make_collate(tokenizer, job: FinetuneJob, rank: int) -> tuple[Callable, Callable]:
    """-> (collate for training batches, pad for scoring batches)."""
    if job.task == "ner":
        from transformers import DataCollatorForTokenClassification

        pad_labelled = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")  # labels padded with -100
        return pad_labelled, pad_labelled

    def pad(batch):
        return tokenizer.pad(batch, return_tensors="pt")  # dynamic padding: to this batch's longest

    special = set(tokenizer.all_special_ids)
    aug_rng = random.Random(job.seed * 1000 + rank)

    def collate(batch):
        if job.word_dropout > 0:
            batch = [
                {**f, "input_ids": ids, "attention_mask": [1] * len(ids)}
                for f in batch
                for ids in [word_dropout(f["input_ids"], job.word_dropout, special, aug_rng)]
            ]
        return pad(batch)

    return collate, pad


# ---------------------------------------------------------------- model

DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "dropout",
    "attention_dropout",
    "seq_classif_dropout",
)


def build_model(job: FinetuneJob):
    """-> (model, parameters, trainable parameters): the base model with a new head of
    ``len(label_names)`` outputs, LoRA-wrapped where asked."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = {"cls": AutoModelForSequenceClassification, "ner": AutoModelForTokenClassification}[job.task]
    names = job.label_names
    labels: dict[str, Any] = {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
    if job.model:
        config = AutoConfig.from_pretrained(job.model, **labels)
    else:
        assert job.config is not None  # a job without weights carries the config of its new model
        config = AutoConfig.for_model(**job.config, **labels)
    if job.dropout is not None:
        for attr in DROPOUT_ATTRS:
            if hasattr(config, attr):
                setattr(config, attr, job.dropout)
    model = auto.from_pretrained(job.model, config=config) if job.model else auto.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    if job.method == "lora":
        from lmchain.train import lora

        model = lora.wrap(model, job.lora_r, job.lora_alpha, job.lora_dropout, job.lora_targets)
    return model, n_params, sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_engine(model, job: FinetuneJob, total_steps: int, on_gpu: bool):
    """-> (DeepSpeed engine, schedule). A plain torch optimizer and schedule: DeepSpeed's own CPU
    Adam needs a C++ build, and these behave the same on GPU and CPU ranks. On CPU ranks the fused
    kernel: MiniLM's AdamW step takes 16 ms instead of 102 ms with torch's default per-tensor loop
    (a third of the training loop's time at batch 32 on 2 cores)."""
    import deepspeed
    import torch

    optimizer = torch.optim.AdamW(
        decay_groups(model.named_parameters(), job.weight_decay, job.layer_lr_decay, job.learning_rate),
        lr=job.learning_rate,
        fused=True if not on_gpu else None,
    )
    warmup = int(total_steps * job.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, job.lr_schedule)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=schedule, config=job.ds_config
    )
    return engine, schedule


# ---------------------------------------------------------------- scoring


@dataclass
class Scorer:
    """Scores features with every rank's share: (macro-F1, accuracy); ``ner``: (entity F1, word
    accuracy). All ranks take the same number of forward passes (ZeRO-3 gathers weights
    collectively), padding with repeats that are not counted."""

    engine: Any
    pad: Callable
    job: FinetuneJob
    filler: list[dict]  # a feature to pad the short ranks' passes with
    r: Rank

    def __call__(self, feats: list[dict]) -> tuple[float, float]:
        import torch

        task, names = self.job.task, self.job.label_names
        k = len(names)
        counts = torch.zeros(k * k if task == "cls" else 5, dtype=torch.long)
        own = sorted_batches([len(f["input_ids"]) for f in feats], self.job.eval_batch_size)
        n = torch.tensor([len(own)])
        self.r.dist.all_reduce(n, op=self.r.dist.ReduceOp.MAX)
        engine = self.engine
        engine.eval()
        # no_grad, not inference_mode: ZeRO-3 gathers weights inside forward, and inference
        # tensors made there break the next backward pass.
        with torch.no_grad(), self.r.autocast():
            for i in range(int(n)):
                batch = self.pad([feats[j] for j in own[i]] if i < len(own) else self.filler)
                labels = batch.pop("labels")
                pred = engine(**{k_: v.to(engine.device) for k_, v in batch.items()}).logits.argmax(-1).cpu()
                if i >= len(own):
                    continue
                if task == "cls":
                    counts += torch.bincount(labels * k + pred, minlength=k * k)
                else:
                    from lmchain.train.ner import span_counts

                    counts += torch.tensor(span_counts(labels.tolist(), pred.tolist(), names))
        engine.train()
        self.r.dist.all_reduce(counts)
        if task == "ner":
            from lmchain.train.ner import f1_from_counts

            return f1_from_counts(counts.tolist())
        confusion = counts.view(k, k).tolist()
        return macro_f1(confusion), accuracy(confusion)


# ---------------------------------------------------------------- loop


@dataclass
class Progress:
    """What the loop measured, for :func:`final_metrics`."""

    losses: list[tuple[int, float]] = field(default_factory=list)
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, F1, accuracy)
    step: int = 0
    seen: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    stopped_early: bool = False
    # Why the loop ended: "patience" (validation stopped improving), "max_steps" (the step
    # budget), "epochs" (every planned pass ran). The manifest and MLflow report it.
    stop_reason: str = ""


def train(
    engine,
    schedule,
    plan: Plan,
    features: list[dict],
    collate: Callable,
    loss_fn,
    score: Scorer | None,
    val_features: list[dict],
    best,
    job: FinetuneJob,
    r: Rank,
    log,
    average=None,
) -> Progress:
    """The engine loop: steps over the epochs' batches, a loss line about every 5% of the steps,
    validation every ``eval_every`` steps (default: once per epoch) with early stopping."""

    def batches():
        epoch = 0
        while True:
            for idx in plan.epoch_batches(epoch):
                yield epoch, collate([features[j] for j in idx])
            epoch += 1

    total = plan.total_steps
    eval_every = job.eval_every or plan.steps_per_epoch
    log_every = max(1, total // 20)
    p, bad_evals, t0 = Progress(), 0, time.perf_counter()
    engine.train()
    for p.step, (epoch, batch) in zip(range(1, total + 1), batches()):
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        with r.autocast():
            if loss_fn is not None:
                labels = batch.pop("labels")
                loss = loss_fn(engine(**batch).logits.float(), labels)
            else:
                loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        if average is not None:
            average.update()
        p.seen += batch["input_ids"].shape[0] * r.world
        if p.step % log_every == 0 or p.step == total:
            mean = loss.detach().float().clone()
            r.dist.all_reduce(mean)
            p.losses.append((p.step, mean.item() / r.world))
            rate = p.seen / (time.perf_counter() - t0 - p.eval_s)
            log(
                f"step {p.step}/{total} epoch {epoch} loss {p.losses[-1][1]:.4f} "
                f"lr {max(schedule.get_last_lr()):.2e} {rate:.1f} samples/s"  # the head's, under layer decay
            )
        if score is not None and (p.step % eval_every == 0 or p.step == total):
            te = time.perf_counter()
            with average.swapped_in() if average is not None else nullcontext():
                f1, acc = score(val_features)
                improved = best.offer(f1, p.step)  # a snapshot of the average, when there is one
            bad_evals = 0 if improved else bad_evals + 1
            p.eval_s += time.perf_counter() - te
            p.curve.append((p.step, f1, acc))
            log(
                f"validation step {p.step}: macro-F1 {f1:.4f} accuracy {acc:.4f}"
                f"{' (best)' if improved else f' (best {best.score:.4f} at step {best.step})'}"
            )
            if job.patience and bad_evals >= job.patience:
                log(f"early stop: {job.patience} evaluation(s) without gain")
                p.stopped_early = True
                break
    p.stop_reason = "patience" if p.stopped_early else "max_steps" if job.max_steps else "epochs"
    p.train_s = time.perf_counter() - t0
    return p


def final_metrics(
    p: Progress,
    plan: Plan,
    best_step: int | None,
    best_score: float | None,
    world: int,
    device: str,
    precision: str,
    n_params: int,
    n_trainable: int,
    report: dict,
) -> dict:
    """``metrics.json``: what the launcher returns to the stage."""
    metrics = {
        "losses": p.losses,
        "final_loss": p.losses[-1][1],
        "train_seconds": round(p.train_s, 2),
        "eval_seconds": round(p.eval_s, 2),
        "samples_per_second": round(p.seen / max(1e-9, p.train_s - p.eval_s), 2),
        "samples": p.seen,
        "steps": p.step,
        "planned_steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "epochs_run": round(p.step / plan.steps_per_epoch, 2),
        "stop_reason": p.stop_reason,
        "world_size": world,
        "device": device,
        "parameters": n_params,
        "trainable_parameters": n_trainable,
        "precision": precision,
        **report,
    }
    if p.curve:
        metrics.update(
            {
                "validation_curve": p.curve,
                "best_step": best_step,
                # The epoch the kept weights come from (fractional with eval_every): what validation chose.
                "best_epoch": round(best_step / plan.steps_per_epoch, 2) if best_step else None,
                "best_macro_f1": best_score,
                "best_accuracy": next(a for s, _, a in p.curve if s == best_step),
                "stopped_early": p.stopped_early,
            }
        )
    return metrics


def save_model(module, out: Path) -> None:
    from lmchain.train import lora

    lora.merged(module).save_pretrained(out)


# ---------------------------------------------------------------- the rank


def main(_rank: int, job: FinetuneJob) -> None:
    import deepspeed
    import torch
    from transformers import AutoTokenizer

    from lmchain.train.best import BestWeights
    from lmchain.train.rank import init_rank

    if job.task not in TASKS:
        raise JobError(
            f"unknown task {job.task!r}: this worker fine-tunes ({', '.join(TASKS)}); pretraining "
            "runs lmchain.train.pretrain_worker"
        )
    r = init_rank(job)
    rank, world, dist = r.rank, r.world, r.dist
    log = r.logger(job.task)

    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer)
    rows = read_rows(job.train_file)
    per_rank = len(rows) // world
    features = encode(tokenizer, rows[rank * per_rank : (rank + 1) * per_rank], job)
    plan = plan_steps(job, [len(f["input_ids"]) for f in features], per_rank)
    collate, pad = make_collate(tokenizer, job, rank)
    val_features = encode(tokenizer, read_rows(job.validation_file)[rank::world], job)  # disjoint shares

    model, n_params, n_trainable = build_model(job)
    log(
        f"model {job.model or 'from config'}: {n_params / 1e6:.1f}M parameters ({n_trainable:,} trained, "
        f"{job.method}), {world} rank(s) on {r.device.type}{' bf16 autocast' if r.cpu_bf16 else ''}, "
        f"{torch.get_num_threads()} thread(s)/rank, {per_rank} examples/rank, {plan.total_steps} steps"
    )
    engine, schedule = build_engine(model, job, plan.total_steps, r.on_gpu)
    zero_stage = job.ds_config.get("zero_optimization", {}).get("stage", 0)
    zero3 = zero_stage == 3
    log(f"DeepSpeed {deepspeed.__version__} engine, ZeRO-{zero_stage}, {world} rank(s)")

    loss_fn = None
    if job.task == "cls":
        weights = None
        if job.class_weights == "balanced":
            weights = torch.tensor(
                balanced_class_weights([int(x["label"]) for x in rows], len(job.label_names)), device=engine.device
            )
            log(f"class weights {[round(w, 3) for w in weights.tolist()]}")
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    score = Scorer(engine, pad, job, features[:1], r)
    best = BestWeights(engine.module, zero3)
    average = None
    if job.ema_decay:
        if zero3:  # each rank holds a shard of every weight: the average would need gathering each step
            raise JobError("finetune.ema_decay needs ZeRO stage 0-2 (ZeRO-3 partitions the weights)")
        from lmchain.train.average import WeightAverage

        average = WeightAverage(engine.module, job.ema_decay)
    has_validation = dist_sum(len(val_features), torch) > 0
    if not has_validation:
        log(
            f"no validation split: all {plan.total_steps} planned steps run, with no early stopping, "
            "and the last weights are saved"
        )
    progress = train(
        engine,
        schedule,
        plan,
        features,
        collate,
        loss_fn,
        score if has_validation else None,
        val_features,
        best,
        job,
        r,
        log,
        average,
    )
    if best.state is None and average is not None:
        average.copy_to_model()  # no validation: the average of the last steps is the model
    if best.state is not None:
        best.restore()
        log(f"restored the best weights: step {best.step}, macro-F1 {best.score:.4f}")

    report = {}
    if job.task == "cls" and job.report_file:
        report_rows = read_rows(job.report_file)
        f1, acc = score(encode(tokenizer, report_rows[rank::world], job))
        report = {"report_accuracy": acc, "report_macro_f1": f1, "report_examples": len(report_rows)}
        log(f"report file: accuracy {acc:.4f} macro-F1 {f1:.4f} on {len(report_rows)} examples")

    out = Path(job.output_dir)
    if zero3:
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            if rank == 0:
                save_model(engine.module, out)
    elif rank == 0:
        save_model(engine.module, out)
    if rank == 0:
        tokenizer.save_pretrained(out)
        metrics = final_metrics(
            progress,
            plan,
            best.step,
            best.score,
            world,
            r.device.type,
            "bf16" if (r.on_gpu or r.cpu_bf16) else "fp32",
            n_params,
            n_trainable,
            report,
        )
        Path(job.metrics_file).write_text(json.dumps(metrics, indent=2))
        log(f"saved {out} ({progress.train_s:.1f}s, {metrics['samples_per_second']} samples/s)")
    dist.barrier()


def dist_sum(value: int, torch) -> int:
    t = torch.tensor([value])
    torch.distributed.all_reduce(t)
    return int(t)


if __name__ == "__main__":
    run_rank(main, FinetuneJob)
