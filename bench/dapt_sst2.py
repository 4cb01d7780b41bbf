"""Domain-adaptive pretraining on SST-2: continued MLM of the packaged MiniLM on SST-2 training
sentences, then fine-tuning, vs fine-tuning the packaged MiniLM directly.

Both fine-tunes use the same recipe (configs/demo.yaml's finetune section: one CPU rank,
batch 32, 1 epoch, learning rate 1e-4) on the same 8,000 SST-2 training sentences (a seeded
sample) with the same 500 further sentences as validation, and are scored by the same
function (bench/finetune_throughput.py's) on SST-2 ``dev.tsv``. The continued pretraining is
lmchain's pretrain stage (a DeepSpeed job) on the SST-2 training sentences: unlabelled text of
the task's domain, the dev sentences never included.

Ends with ``RESULT dapt_sst2 ratio=... acc=... baseline_acc=...`` (ratio: dev accuracy with
DAPT / without).

Environment: BENCH_DAPT_STEPS (160), BENCH_DAPT_BATCH (32), BENCH_DAPT_BLOCK (64), BENCH_DAPT_RANKS (1),
BENCH_DAPT_SAMPLES (8000 fine-tuning sentences),
BENCH_DAPT_PRECISION (fp32), BENCH_DAPT_DEV (0: all dev sentences).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS = int(os.environ.get("BENCH_DAPT_STEPS", 160))
BATCH = int(os.environ.get("BENCH_DAPT_BATCH", 32))
BLOCK = int(os.environ.get("BENCH_DAPT_BLOCK", 64))
RANKS = int(os.environ.get("BENCH_DAPT_RANKS", 1))
SAMPLES = int(os.environ.get("BENCH_DAPT_SAMPLES", 8000))
DEV = int(os.environ.get("BENCH_DAPT_DEV", 0))  # score on the first N dev sentences (0: all)
PRECISION = os.environ.get("BENCH_DAPT_PRECISION", "fp32")  # of the continued pretraining ("bf16" only pays with AVX512-BF16/AMX)
NAMES = ["negative", "positive"]


def finetune(base_model: str, train: list[dict], validation: list[dict], dev: list[dict], work: Path) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune_throughput import dev_correct
    from lmchain.config import load_config
    from lmchain.train import finetune as ft, models

    recipe = load_config("demo").finetune  # the demo's fine-tune recipe, for both arms
    cfg = type(recipe)(**{**{f: getattr(recipe, f) for f in recipe.__dataclass_fields__}, "base_model": base_model})
    files = {}
    for name, rows in (("train", train), ("validation", validation)):
        files[name] = work / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.perf_counter()
    metrics = ft.train_classifier(cfg, models.resolve(base_model), str(files["train"]), str(files["validation"]),
                                  NAMES, work / "model", work / "job")
    model = AutoModelForSequenceClassification.from_pretrained(work / "model")
    correct = dev_correct(model, AutoTokenizer.from_pretrained(work / "model"), dev)
    acc = sum(correct) / len(correct)
    return {"acc": acc, "seconds": time.perf_counter() - t0, "steps": metrics["steps"],
            "best_accuracy": metrics.get("best_accuracy")}


def main() -> int:
    from finetune_throughput import read_tsv
    from lmchain.datasets import sst2_dir

    os.environ.setdefault("LMCHAIN_HOME", tempfile.mkdtemp(prefix="bench-dapt-home-"))
    folder = sst2_dir(download=False)
    all_train = read_tsv(folder / "train.tsv")
    dev = read_tsv(folder / "dev.tsv")
    dev = dev[:DEV] if DEV else dev
    shuffled = list(all_train)
    random.Random(0).shuffle(shuffled)
    train, validation = shuffled[:SAMPLES], shuffled[SAMPLES:SAMPLES + 500]
    work = Path(tempfile.mkdtemp(prefix="bench-dapt-"))
    print(f"DAPT on SST-2: {len(all_train)} unlabelled training sentences, {STEPS} MLM steps of {RANKS} x {BATCH} x "
          f"{BLOCK} tokens; fine-tune on {len(train)} labelled; dev {len(dev)}; load {os.getloadavg()}", flush=True)

    from lmchain.artifacts import RunContext
    from lmchain.config import PretrainConfig
    from lmchain.stages import pretrain

    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in all_train))
    ctx = RunContext("dapt", home=Path(os.environ["LMCHAIN_HOME"]))
    t0 = time.perf_counter()
    m = pretrain.run(PretrainConfig(base_model="minilm", ranks=RANKS, zero_stage=2 if RANKS > 1 else 0,
                                    batch_size=BATCH, block_size=BLOCK, max_steps=STEPS, learning_rate=5e-5,
                                    warmup_ratio=0.06, checkpoint_every=40, max_length=64, precision=PRECISION),
                     ctx, {"gate": {"outputs": {"records": str(corpus)}}})
    dapt_model = str(ctx.stage_dir("pretrain") / "model")
    print(f"continued MLM: {m.info['steps']} steps in {time.perf_counter() - t0:.0f}s, loss "
          f"{m.metrics['first_loss']:.3f} -> {m.metrics['final_loss']:.3f}, "
          f"{m.metrics['tokens_per_second']:.0f} tokens/s", flush=True)

    from lmchain.evaluate.lm import mlm_metrics
    from lmchain.train.models import packaged_minilm

    dev_texts = [r["text"] for r in dev[:1000]]
    before = mlm_metrics(packaged_minilm(), dev_texts, seed=0)
    after = mlm_metrics(dapt_model, dev_texts, seed=0)
    print(f"MLM on 1,000 dev sentences: perplexity {before['perplexity']:.2f} -> {after['perplexity']:.2f}, "
          f"accuracy {before['mlm_accuracy']:.4f} -> {after['mlm_accuracy']:.4f}", flush=True)

    base = finetune("minilm", train, validation, dev, work / "ft-base")
    print(f"fine-tune alone:      dev accuracy {base['acc']:.4f} ({base['seconds']:.0f}s)", flush=True)
    dapt = finetune(dapt_model, train, validation, dev, work / "ft-dapt")
    print(f"DAPT then fine-tune:  dev accuracy {dapt['acc']:.4f} ({dapt['seconds']:.0f}s)", flush=True)
    print(f"RESULT dapt_sst2 ratio={dapt['acc'] / base['acc']:.4f} acc={dapt['acc']:.4f} "
          f"baseline_acc={base['acc']:.4f} mlm_ppl={after['perplexity']:.2f} baseline_mlm_ppl={before['perplexity']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
