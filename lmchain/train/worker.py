"""One training rank, launched by the ``deepspeed`` launcher (never imported by the DAG).

Reads a JSON spec written by :mod:`lmchain.train.launcher`, then: setup -> data -> model ->
DeepSpeed engine loop -> save. ``task`` is ``mlm`` (masked-LM pretraining) or ``cls``
(sequence classification). Every rank reads the whole input and keeps its own contiguous
slice, so ranks see distinct data and take the same number of steps (allreduce needs that).
Rank 0 writes the model folder and ``metrics.json``; MLflow logging happens in the parent task,
so ranks need no tracking server.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path


def main() -> None:
    # ---------------------------------------------------------------- setup
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--local_rank", type=int, default=0)  # passed by the launcher
    spec = json.loads(Path(parser.parse_args().spec).read_text())

    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    on_gpu = get_accelerator().device_name() == "cuda"
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local_world = int(os.environ.get("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", world)))
    if not on_gpu:
        # Ranks share the machine's cores; oversubscribing them slows every rank down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    device = torch.device(get_accelerator().device_name(), int(os.environ.get("LOCAL_RANK", 0))) if on_gpu \
        else torch.device("cpu")
    seed = spec["seed"]
    random.seed(seed)
    torch.manual_seed(seed)

    def log(msg: str) -> None:
        if rank == 0:
            print(f"[lmchain.train {spec['task']}] {msg}", flush=True)

    # ---------------------------------------------------------------- data
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    rows = [json.loads(line) for line in open(spec["train_file"], encoding="utf-8") if line.strip()]
    per_rank = len(rows) // world
    rows = rows[rank * per_rank:(rank + 1) * per_rank]
    bs = spec["batch_size"]
    steps_per_epoch = per_rank // bs
    if steps_per_epoch == 0:
        print(f"[lmchain.train error] {per_rank} examples per rank is less than one batch of {bs}; "
              "lower batch_size or ranks, or give more data", flush=True)
        raise SystemExit(1)
    total_steps = spec["max_steps"] or max(1, math.ceil(steps_per_epoch * spec["epochs"]))
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=spec["max_length"])
    features = [{"input_ids": ids, "attention_mask": am} for ids, am in zip(enc["input_ids"], enc["attention_mask"])]
    if spec["task"] == "cls":
        for f, r in zip(features, rows):
            f["labels"] = int(r["label"])
        collate = lambda batch: tokenizer.pad(batch, return_tensors="pt")  # noqa: E731 - dynamic padding
    else:
        collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=spec["mlm_probability"])

    def batches():
        epoch = 0
        while True:
            order = list(range(len(features)))
            random.Random(seed + epoch).shuffle(order)
            for i in range(steps_per_epoch):
                yield collate([features[j] for j in order[i * bs:(i + 1) * bs]])
            epoch += 1

    # ---------------------------------------------------------------- model
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification

    auto = AutoModelForMaskedLM if spec["task"] == "mlm" else AutoModelForSequenceClassification
    extra = {}
    if spec["task"] == "cls":
        names = spec["label_names"]
        extra = {"num_labels": len(names), "id2label": dict(enumerate(names)),
                 "label2id": {n: i for i, n in enumerate(names)}}
    if spec["model"]:
        model = auto.from_pretrained(spec["model"], **extra)
    else:
        config = AutoConfig.for_model(**spec["config"], **extra)
        model = auto.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {spec['model'] or 'from config'}: {n_params / 1e6:.1f}M parameters, {world} rank(s) on "
        f"{device.type}, {per_rank} examples/rank, {total_steps} steps")

    # A plain torch optimizer and schedule: DeepSpeed's own CPU Adam needs a C++ build, and
    # these behave the same on GPU and CPU ranks.
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=spec["learning_rate"])
    warmup = int(total_steps * spec["warmup_ratio"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, warmup), max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                           config=spec["ds_config"])

    # ---------------------------------------------------------------- loop
    engine.train()
    losses, t0, seen = [], time.perf_counter(), 0
    log_every = max(1, total_steps // 20)
    for step, batch in zip(range(1, total_steps + 1), batches()):
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        seen += batch["input_ids"].shape[0] * world
        if step % log_every == 0 or step == total_steps:
            mean = loss.detach().clone()
            torch.distributed.all_reduce(mean)
            mean = mean.item() / world
            losses.append((step, mean))
            rate = seen / (time.perf_counter() - t0)
            log(f"step {step}/{total_steps} loss {mean:.4f} lr {schedule.get_last_lr()[0]:.2e} "
                f"{rate:.1f} samples/s")
    train_s = time.perf_counter() - t0

    # ---------------------------------------------------------------- save
    out = Path(spec["output_dir"])
    if spec["ds_config"].get("zero_optimization", {}).get("stage", 0) == 3:
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            if rank == 0:
                engine.module.save_pretrained(out)
    elif rank == 0:
        engine.module.save_pretrained(out)
    if rank == 0:
        tokenizer.save_pretrained(out)
        metrics = {"losses": losses, "final_loss": losses[-1][1], "train_seconds": round(train_s, 2),
                   "samples_per_second": round(seen / train_s, 2), "samples": seen, "steps": total_steps,
                   "world_size": world, "device": device.type, "parameters": n_params}
        Path(spec["metrics_file"]).write_text(json.dumps(metrics, indent=2))
        log(f"saved {out} ({train_s:.1f}s, {metrics['samples_per_second']} samples/s)")
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
