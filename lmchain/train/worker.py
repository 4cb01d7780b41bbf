"""One training rank, launched by the ``deepspeed`` launcher (never imported by the DAG).

Reads a JSON spec written by :mod:`lmchain.train.launcher`, then: setup -> data -> model ->
DeepSpeed engine loop -> save. ``task`` is ``cls`` (sequence classification) or ``ner``
(token classification: BIO tags per word, see :mod:`lmchain.train.ner`); pretraining has its
own worker, :mod:`lmchain.train.pretrain_worker`. Every rank reads the whole input and keeps its own contiguous
slice, so ranks see distinct data and take the same number of steps (allreduce needs that).
Batches are length-grouped and padded per batch (see :mod:`lmchain.train.batching`).
For ``cls`` and ``ner`` the ranks score the validation split together every ``eval_every`` steps,
keep the weights with the best macro-F1 (``ner``: entity-level F1), stop early after
``patience`` evaluations without gain
and save the best weights. Rank 0 writes the model folder and ``metrics.json``; MLflow logging
happens in the parent task, so ranks need no tracking server.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from lmchain.train.batching import length_grouped_batches, sorted_batches, word_dropout
from lmchain.train.optim import accuracy, balanced_class_weights, decay_groups, lr_factor, macro_f1
from lmchain.train.rank import init_rank

SUPERVISED = ("cls", "ner")


def read_rows(path: str | None) -> list[dict]:
    if not path:
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def main() -> None:
    # ---------------------------------------------------------------- setup
    import deepspeed
    import torch

    r = init_rank()
    spec, rank, world, on_gpu, device, cpu_bf16, autocast, dist = (
        r.spec, r.rank, r.world, r.on_gpu, r.device, r.cpu_bf16, r.autocast, r.dist)
    seed, task = spec["seed"], spec["task"]
    log = r.logger(task)

    # ---------------------------------------------------------------- data
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])

    def encode(rows: list[dict]) -> list[dict]:
        if not rows:
            return []
        if task == "ner":
            from lmchain.train.ner import encode_words

            return encode_words(tokenizer, rows, spec["label_names"], spec["max_length"])
        enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=spec["max_length"])
        feats = [{"input_ids": ids, "attention_mask": am} for ids, am in zip(enc["input_ids"], enc["attention_mask"])]
        if task == "cls":
            for f, r in zip(feats, rows):
                f["labels"] = int(r["label"])
        return feats

    rows = read_rows(spec["train_file"])
    per_rank = len(rows) // world
    features = encode(rows[rank * per_rank:(rank + 1) * per_rank])
    lengths = [len(f["input_ids"]) for f in features]
    bs = spec["batch_size"]
    group = spec.get("group_batches", 64) if spec.get("group_by_length", True) else 1

    def epoch_batches(epoch: int) -> list[list[int]]:
        return length_grouped_batches(lengths, bs, seed + epoch, group_batches=group)

    steps_per_epoch = len(epoch_batches(0))
    if steps_per_epoch == 0:
        print(f"[lmchain.train error] {per_rank} examples per rank is less than one batch of {bs}; "
              "lower batch_size or ranks, or give more data", flush=True)
        raise SystemExit(1)
    total_steps = spec["max_steps"] or max(1, math.ceil(steps_per_epoch * spec["epochs"]))

    special = set(tokenizer.all_special_ids)
    aug_rng = random.Random(seed * 1000 + rank)

    def pad(batch):
        return tokenizer.pad(batch, return_tensors="pt")  # dynamic padding: to this batch's longest

    if task == "cls":
        def collate(batch):
            rate = spec.get("word_dropout", 0.0)
            if rate > 0:
                batch = [{**f, "input_ids": ids, "attention_mask": [1] * len(ids)} for f in batch
                         for ids in [word_dropout(f["input_ids"], rate, special, aug_rng)]]
            return pad(batch)
    elif task == "ner":
        from transformers import DataCollatorForTokenClassification

        collate = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")  # labels padded with -100
        pad = collate
    else:
        raise SystemExit(f"unknown task {task!r}: this worker fine-tunes (cls, ner); pretraining runs "
                         "lmchain.train.pretrain_worker")

    def batches():
        epoch = 0
        while True:
            for idx in epoch_batches(epoch):
                yield epoch, collate([features[j] for j in idx])
            epoch += 1

    val_rows = read_rows(spec.get("validation_file")) if task in SUPERVISED else []
    val_features = encode(val_rows[rank::world])  # ranks score disjoint shares, then sum counts

    # ---------------------------------------------------------------- model
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = {"cls": AutoModelForSequenceClassification, "ner": AutoModelForTokenClassification}[task]
    extra = {}
    names = spec.get("label_names") or []
    if task in SUPERVISED:
        extra = {"num_labels": len(names), "id2label": dict(enumerate(names)),
                 "label2id": {n: i for i, n in enumerate(names)}}
    config = AutoConfig.from_pretrained(spec["model"], **extra) if spec["model"] \
        else AutoConfig.for_model(**spec["config"], **extra)
    if spec.get("dropout") is not None:
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout",
                     "attention_dropout", "seq_classif_dropout"):
            if hasattr(config, attr):
                setattr(config, attr, spec["dropout"])
    model = auto.from_pretrained(spec["model"], config=config) if spec["model"] else auto.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    if spec.get("method") == "lora":
        from lmchain.train import lora

        model = lora.wrap(model, spec["lora_r"], spec["lora_alpha"], spec["lora_dropout"], spec["lora_targets"])
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model {spec['model'] or 'from config'}: {n_params / 1e6:.1f}M parameters ({n_trainable:,} trained, "
        f"{spec.get('method', 'full')}), {world} rank(s) on {device.type}"
        f"{' bf16 autocast' if cpu_bf16 else ''}, {torch.get_num_threads()} thread(s)/rank, {per_rank} "
        f"examples/rank, {total_steps} steps")

    # A plain torch optimizer and schedule: DeepSpeed's own CPU Adam needs a C++ build, and
    # these behave the same on GPU and CPU ranks. On CPU ranks the fused kernel: MiniLM's AdamW
    # step takes 16 ms instead of 102 ms with torch's default per-tensor loop (a third of the
    # training loop's time at batch 32 on 2 cores).
    optimizer = torch.optim.AdamW(decay_groups(model.named_parameters(), spec.get("weight_decay", 0.01)),
                                  lr=spec["learning_rate"], fused=True if not on_gpu else None)
    warmup = int(total_steps * spec["warmup_ratio"])
    kind = spec.get("lr_schedule", "linear")
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, kind))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                           config=spec["ds_config"])
    zero_stage = spec["ds_config"].get("zero_optimization", {}).get("stage", 0)
    zero3 = zero_stage == 3
    log(f"DeepSpeed {deepspeed.__version__} engine, ZeRO-{zero_stage}, {world} rank(s)")

    loss_fn = None
    if task == "cls":
        weights = None
        if spec.get("class_weights") == "balanced":
            weights = torch.tensor(balanced_class_weights([int(r["label"]) for r in rows], len(names)),
                                   device=engine.device)
            log(f"class weights {[round(w, 3) for w in weights.tolist()]}")
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    def score(feats: list[dict]) -> tuple[float, float]:
        """(macro-F1, accuracy) over every rank's share (``ner``: entity F1, word accuracy). All ranks
        take the same number of forward passes (ZeRO-3 gathers weights collectively), padding
        with repeats that are not counted."""
        k = len(names)
        counts = torch.zeros(k * k if task == "cls" else 5, dtype=torch.long)
        ebs = spec.get("eval_batch_size", 128)
        own = sorted_batches([len(f["input_ids"]) for f in feats], ebs)
        n = torch.tensor([len(own)])
        dist.all_reduce(n, op=dist.ReduceOp.MAX)
        engine.eval()
        # no_grad, not inference_mode: ZeRO-3 gathers weights inside forward, and inference
        # tensors made there break the next backward pass.
        with torch.no_grad(), autocast():
            for i in range(int(n)):
                batch = pad([feats[j] for j in own[i]] if i < len(own) else features[:1])
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
        dist.all_reduce(counts)
        if task == "ner":
            from lmchain.train.ner import f1_from_counts

            return f1_from_counts(counts.tolist())
        confusion = counts.view(k, k).tolist()
        return macro_f1(confusion), accuracy(confusion)

    # ---------------------------------------------------------------- loop
    from lmchain.train.best import BestWeights

    best = BestWeights(engine.module, zero3)
    has_validation = task in SUPERVISED and dist_sum(len(val_features), torch) > 0
    eval_every = spec.get("eval_every") or steps_per_epoch
    patience = spec.get("patience", 0)
    engine.train()
    losses, curve, t0, seen, eval_s, bad_evals, stopped_early = [], [], time.perf_counter(), 0, 0.0, 0, False
    log_every = max(1, total_steps // 20)
    step = 0
    for step, (epoch, batch) in zip(range(1, total_steps + 1), batches()):
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        with autocast():
            if task == "cls":
                labels = batch.pop("labels")
                loss = loss_fn(engine(**batch).logits.float(), labels)
            else:
                loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        seen += batch["input_ids"].shape[0] * world
        if step % log_every == 0 or step == total_steps:
            mean = loss.detach().float().clone()
            dist.all_reduce(mean)
            mean = mean.item() / world
            losses.append((step, mean))
            rate = seen / (time.perf_counter() - t0 - eval_s)
            log(f"step {step}/{total_steps} epoch {epoch} loss {mean:.4f} lr {schedule.get_last_lr()[0]:.2e} "
                f"{rate:.1f} samples/s")
        if has_validation and (step % eval_every == 0 or step == total_steps):
            te = time.perf_counter()
            f1, acc = score(val_features)
            improved = best.offer(f1, step)
            bad_evals = 0 if improved else bad_evals + 1
            eval_s += time.perf_counter() - te
            curve.append((step, f1, acc))
            log(f"validation step {step}: macro-F1 {f1:.4f} accuracy {acc:.4f}"
                f"{' (best)' if improved else f' (best {best.score:.4f} at step {best.step})'}")
            if patience and bad_evals >= patience:
                log(f"early stop: {patience} evaluation(s) without gain")
                stopped_early = True
                break
    train_s = time.perf_counter() - t0
    if best.state is not None:
        best.restore()
        log(f"restored the best weights: step {best.step}, macro-F1 {best.score:.4f}")

    report = {}
    if task == "cls" and spec.get("report_file"):
        report_rows = read_rows(spec["report_file"])
        f1, acc = score(encode(report_rows[rank::world]))
        report = {"report_accuracy": acc, "report_macro_f1": f1, "report_examples": len(report_rows)}
        log(f"report file: accuracy {report['report_accuracy']:.4f} macro-F1 {report['report_macro_f1']:.4f} "
            f"on {len(report_rows)} examples")

    # ---------------------------------------------------------------- save
    out = Path(spec["output_dir"])
    module = engine.module
    if zero3:
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank == 0:
                save_model(module, out)
    elif rank == 0:
        save_model(module, out)
    if rank == 0:
        tokenizer.save_pretrained(out)
        metrics = {"losses": losses, "final_loss": losses[-1][1], "train_seconds": round(train_s, 2),
                   "eval_seconds": round(eval_s, 2),
                   "samples_per_second": round(seen / max(1e-9, train_s - eval_s), 2), "samples": seen,
                   "steps": step, "planned_steps": total_steps, "world_size": world, "device": device.type,
                   "parameters": n_params, "trainable_parameters": n_trainable,
                   "precision": "bf16" if (on_gpu or cpu_bf16) else "fp32", **report}
        if curve:
            metrics.update({"validation_curve": curve, "best_step": best.step, "best_macro_f1": best.score,
                            "best_accuracy": next(a for s, _, a in curve if s == best.step),
                            "stopped_early": stopped_early})
        Path(spec["metrics_file"]).write_text(json.dumps(metrics, indent=2))
        log(f"saved {out} ({train_s:.1f}s, {metrics['samples_per_second']} samples/s)")
    dist.barrier()


def dist_sum(value: int, torch) -> int:
    t = torch.tensor([value])
    torch.distributed.all_reduce(t)
    return int(t)


def save_model(module, out: Path) -> None:
    from lmchain.train import lora

    lora.merged(module).save_pretrained(out)


if __name__ == "__main__":
    main()
