"""Fine-tuning speed and accuracy: lmchain's fine-tune vs a naive transformers loop.

Both fine-tune the packaged MiniLM-L6-H384 for one pass over the same 8,000 SST-2 training
sentences (a seeded sample of ``train.tsv``) and are scored by the same function on SST-2
``dev.tsv``. The naive loop is what a tutorial writes: random batches of 32 padded to their
longest text, plain AdamW at a constant rate, in this process with torch's default threads.
lmchain runs its fine-tune stage's job (``lmchain.train.finetune.train_classifier``: the
DeepSpeed launcher, a CPU rank, length-grouped batches, the recipe's settings); it also scores
500 further held-out training sentences as its validation split to keep its best weights.

Throughput is training samples over wall seconds: for the naive loop the loop itself, for
lmchain the whole job (process start, model load, validation passes and save included).
Ends with ``RESULT finetune ratio=... acc=... baseline_acc=...``.

Environment: BENCH_FINETUNE_SAMPLES (8000), BENCH_FINETUNE_DEV (0: all), BENCH_FINETUNE_BASELINE=0 skips
the naive loop,
BENCH_FINETUNE_SET="batch_size=16 precision=fp32" overrides lmchain's settings.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SAMPLES = int(os.environ.get("BENCH_FINETUNE_SAMPLES", 8000))
DEV_LIMIT = int(os.environ.get("BENCH_FINETUNE_DEV", 0))  # 0: the whole dev set (for quick checks only)
VALIDATION = 500
NAMES = ["negative", "positive"]

# lmchain's settings for this bench: configs/sst2.yaml's (one CPU rank with both cores, since two
# ranks would add a gloo allreduce of 22M gradients to every step; length grouping, which on these
# 8k sentences computes 1.04x the real tokens instead of 3.0x; bf16 matmuls on this AVX512-BF16
# CPU; a short warm-up and linear decay) but the batch size and learning rate, which suit one pass
# over 8k sentences: bench/finetune_lr_sweep.py chose batch 64 at 3e-4 by macro-F1 on the 500
# validation sentences alone (batch 32 at 5e-5/1e-4/2e-4/3e-4: 0.8881/0.8818/0.8961/0.8756, 5e-5,
# 1e-4 and 3e-4 measured before the optimizer was fused; batch 64 at 2e-4/3e-4/4e-4:
# 0.8939/0.9022/0.8938); SST-2 dev was not looked at. The recipe's batch 32 at 1e-4 is for its 1.5
# passes over all 67k.
LMCHAIN = dict(base_model="minilm", ranks=1, batch_size=64, learning_rate=3e-4, epochs=1.0, max_length=64,
               warmup_ratio=0.06, eval_every=63, patience=0, precision="bf16")


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [{"text": r["sentence"].strip(), "label": int(r["label"])}
                for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def sst2() -> tuple[list[dict], list[dict], list[dict]]:
    from lmchain.datasets import sst2_dir

    folder = sst2_dir(download=False)
    train = read_tsv(folder / "train.tsv")
    random.Random(0).shuffle(train)
    dev = read_tsv(folder / "dev.tsv")
    return train[:SAMPLES], train[SAMPLES:SAMPLES + VALIDATION], dev[:DEV_LIMIT] if DEV_LIMIT else dev


def dev_correct(model, tokenizer, rows: list[dict]) -> list[bool]:
    """The one scorer for both models: per dev sentence, right or wrong (length-sorted batches
    of 128, no gradients)."""
    import torch

    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["text"]))
    correct = [False] * len(rows)
    with torch.inference_mode():
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            enc = tokenizer([rows[j]["text"] for j in idx], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            for j, p in zip(idx, model(**enc).logits.argmax(-1).tolist()):
                correct[j] = p == rows[j]["label"]
    return correct


def naive(train: list[dict], dev: list[dict]) -> dict:
    """Baseline: the plain loop, batch 32 in random order, padding to each batch's longest."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lmchain.train.models import packaged_minilm

    torch.manual_seed(0)
    path = str(packaged_minilm())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    order = list(range(len(train)))
    random.Random(1).shuffle(order)
    model.train()
    t0 = time.perf_counter()
    for i in range(0, len(order) - 31, 32):
        batch = [train[j] for j in order[i:i + 32]]
        enc = tokenizer([r["text"] for r in batch], padding=True, truncation=True, max_length=128,
                        return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([r["label"] for r in batch])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - t0
    samples = len(order) // 32 * 32
    correct = dev_correct(model, tokenizer, dev)
    return {"samples_per_second": samples / seconds, "seconds": seconds, "acc": sum(correct) / len(dev),
            "correct": correct}


def lmchain(train: list[dict], validation: list[dict], dev: list[dict], work: Path) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lmchain.config import FinetuneConfig
    from lmchain.train import finetune, models

    settings = dict(LMCHAIN)
    for item in os.environ.get("BENCH_FINETUNE_SET", "").split():
        key, value = item.split("=", 1)
        settings[key] = type(settings.get(key, value))(value) if key in settings else value
    cfg = FinetuneConfig(**settings)
    files = {}
    for name, rows in (("train", train), ("validation", validation)):
        files[name] = work / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.perf_counter()
    metrics = finetune.train_classifier(cfg, models.resolve(cfg.base_model), str(files["train"]),
                                        str(files["validation"]), NAMES, work / "model", work / "job")
    seconds = time.perf_counter() - t0
    model_dir = str(work / "model")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    correct = dev_correct(model, AutoTokenizer.from_pretrained(model_dir), dev)
    return {"samples_per_second": metrics["samples"] / seconds, "seconds": seconds, "acc": sum(correct) / len(dev),
            "correct": correct,
            "loop_samples_per_second": metrics["samples_per_second"], "best_step": metrics.get("best_step"),
            "steps": metrics["steps"], "settings": settings}


def main() -> None:
    train, validation, dev = sst2()
    print(f"SST-2: {len(train)} training sentences, {len(dev)} dev sentences; load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        ours = lmchain(train, validation, dev, Path(tmp))
    print(f"lmchain: {ours['samples_per_second']:.1f} samples/s end to end ({ours['seconds']:.0f}s; training "
          f"loop {ours['loop_samples_per_second']:.1f} samples/s), dev accuracy {ours['acc']:.4f}, best step "
          f"{ours['best_step']}/{ours['steps']}, settings {ours['settings']}", flush=True)
    if os.environ.get("BENCH_FINETUNE_BASELINE", "1") == "0":
        print(f"RESULT finetune_lmchain sps={ours['samples_per_second']:.2f} acc={ours['acc']:.4f}")
        return
    base = naive(train, dev)
    print(f"naive loop: {base['samples_per_second']:.1f} samples/s ({base['seconds']:.0f}s), dev accuracy "
          f"{base['acc']:.4f}; load {os.getloadavg()}", flush=True)
    ratio = ours["samples_per_second"] / base["samples_per_second"]
    # Is the accuracy difference more than noise? Exact McNemar test on the dev sentences where
    # exactly one of the two models is right (the promotion gate's test).
    from lmchain.evaluate.compare import mcnemar_exact

    mc = mcnemar_exact(base["correct"], ours["correct"])
    print(f"dev sentences only lmchain got right: {mc['only_challenger']}, only the plain loop: "
          f"{mc['only_champion']}; McNemar p={mc['p_value']:.3f}", flush=True)
    print(f"RESULT finetune ratio={ratio:.2f} acc={ours['acc']:.4f} baseline_acc={base['acc']:.4f} "
          f"sps={ours['samples_per_second']:.1f} baseline_sps={base['samples_per_second']:.1f} "
          f"mcnemar_p={mc['p_value']:.3f}")


if __name__ == "__main__":
    main()
