"""Task-adaptive pretraining with few labels: does continued MLM on the task's own unlabelled text
make a better classifier from 500-2,000 labelled sentences than fine-tuning alone?

The premise of pretraining is that unlabelled text pays most where labels are few. Setting:
- **Unlabelled text**: every SST-2 row (train.tsv + dev.tsv, ~50k sentences and phrases) left
  after holding out the test sentences and everything sharing a span or 6-gram with them (the
  held-out construction of ``bench/sst2_sentences.py``), labels hidden.
- **TAPT**: lmchain's pretrain stage (the same DeepSpeed job the pipeline runs: MLM head tied to
  the embeddings and warmed up with the encoder frozen, then continued MLM) on that text, once.
- **Labels**: per seed, a seeded sample of BENCH_TAPT_LABELS complete sentences from the training
  pool, plus 200 more for validation (checkpoint selection, early stopping).
- **Arms**: the packaged MiniLM fine-tuned on those labels (control) vs the TAPT model fine-tuned on
  the same labels with the same settings and seed (treatment). Both scored on the same
  BENCH_TAPT_HELDOUT held-out complete sentences.
- **Lift**: paired over seeds and sentences (``bench/paired.py``: a two-level bootstrap).
  The TAPT model is trained once: the CI covers label samples, fine-tune seeds and test texts,
  not the variance of the pretraining run itself.

Ends with ``RESULT tapt gain=... ci_low=... ci_high=... seeds=... labels=... base_acc=... tapt_acc=...
ppl_before=... ppl_after=... pretrain_min=...``.

    .venv/bin/python bench/tapt_low_label.py

Environment: BENCH_TAPT_LABELS (1000), BENCH_TAPT_SEEDS (5), BENCH_TAPT_STEPS (600 MLM steps of
32 x 64 tokens, ~2.5 passes over the text), BENCH_TAPT_LR (1e-4), BENCH_TAPT_HELDOUT (1500),
BENCH_TAPT_EPOCHS (10, with validation each epoch and patience 3), BENCH_TAPT_LIMIT (0: all text;
a smoke run cuts it), BENCH_TAPT_TIMEOUT_S (4 h). The demo's own pretraining scale (is it at least
harmless?): BENCH_TAPT_STEPS=40 BENCH_TAPT_LR=5e-5.
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

LABELS = int(os.environ.get("BENCH_TAPT_LABELS", 1000))
SEEDS = int(os.environ.get("BENCH_TAPT_SEEDS", 5))
STEPS = int(os.environ.get("BENCH_TAPT_STEPS", 600))
LR = float(os.environ.get("BENCH_TAPT_LR", 1e-4))
HELDOUT = int(os.environ.get("BENCH_TAPT_HELDOUT", 1500))
EPOCHS = float(os.environ.get("BENCH_TAPT_EPOCHS", 10))
LIMIT = int(os.environ.get("BENCH_TAPT_LIMIT", 0))
# The stage's default 1-hour job timeout killed a 600-step run at step 390 on 2 cores shared with
# other jobs (~200 tokens/s instead of ~1,200 alone).
TIMEOUT_S = int(os.environ.get("BENCH_TAPT_TIMEOUT_S", 4 * 3600))
VALIDATION = 200
NAMES = ["negative", "positive"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def complete_sentences(pool: list[dict]) -> list[dict]:
    """Rows of the pool that are not a span of another row: whole sentences, as a user would label."""
    from sst2_sentences import MIN_WORDS, spans

    inner: set[str] = set()
    for text in {r["text"] for r in pool}:
        inner |= spans(text.split(), proper=True)
    return sorted(
        (r for r in pool if r["text"] not in inner and len(r["text"].split()) >= MIN_WORDS), key=lambda r: r["text"]
    )


def finetune(base_model: str, train: list[dict], validation: list[dict], seed: int, work: Path) -> tuple[Path, dict]:
    from lmchain.config import FinetuneConfig
    from lmchain.train import finetune as ft, models

    work.mkdir(parents=True)
    cfg = FinetuneConfig(
        base_model=base_model, ranks=1, batch_size=16, learning_rate=5e-5, epochs=EPOCHS, max_length=64,
        warmup_ratio=0.1, eval_every=0, patience=3, precision="bf16", seed=seed,
    )  # fmt: skip
    metrics = ft.train_classifier(
        cfg, models.resolve(base_model), write_jsonl(work / "train.jsonl", train),
        write_jsonl(work / "validation.jsonl", validation), NAMES, work / "model", work / "job",
    )  # fmt: skip
    return work / "model", metrics


def main() -> int:
    from paired import describe, seeds_ci
    from sst2_sentences import correct_on, heldout_split, read_rows

    from lmchain.artifacts import RunContext
    from lmchain.config import PretrainConfig
    from lmchain.datasets import sst2_dir
    from lmchain.stages import pretrain

    os.environ.setdefault("LMCHAIN_HOME", tempfile.mkdtemp(prefix="bench-tapt-home-"))
    work = Path(tempfile.mkdtemp(prefix="bench-tapt-"))
    held, pool = heldout_split(read_rows(sst2_dir(download=False)), HELDOUT)
    pool = pool[:LIMIT] if LIMIT else pool
    sentences = complete_sentences(pool)
    print(
        f"TAPT with {LABELS} labels: {len(pool)} unlabelled rows, {len(sentences)} complete sentences to label from, "
        f"{len(held)} held-out sentences; {SEEDS} seeds; load {os.getloadavg()}",
        flush=True,
    )

    # ------------------------------------------------ task-adaptive pretraining, once
    corpus = write_jsonl(work / "corpus.jsonl", [{"text": r["text"]} for r in pool])
    probe = random.Random(1).sample(sentences, VALIDATION)  # perplexity probe: sentences of the task
    annotate = {"outputs": {"validation": write_jsonl(work / "probe.jsonl", probe), "test": write_jsonl(work / "held.jsonl", held)}}
    ctx = RunContext("tapt", home=Path(os.environ["LMCHAIN_HOME"]))
    t0 = time.perf_counter()
    cfg = PretrainConfig(
        base_model="minilm", ranks=1, batch_size=32, block_size=64, max_steps=STEPS, learning_rate=LR,
        warmup_ratio=0.06, checkpoint_every=0, max_length=64, precision="bf16", timeout_s=TIMEOUT_S,
    )  # fmt: skip
    m = pretrain.run(cfg, ctx, {"gate": {"outputs": {"records": corpus}}, "annotate": annotate})
    pretrain_min = (time.perf_counter() - t0) / 60
    tapt_model = str(ctx.stage_dir("pretrain") / "model")
    before, after = m.metrics["perplexity_before"], m.metrics["perplexity"]
    print(
        f"TAPT: {m.info['steps']} MLM steps in {pretrain_min:.1f} min; perplexity on {VALIDATION} task sentences "
        f"{before:.1f} -> {after:.1f}, MLM accuracy {m.metrics['mlm_accuracy_before']:.3f} -> "
        f"{m.metrics['mlm_accuracy']:.3f}; load {os.getloadavg()}",
        flush=True,
    )

    # ------------------------------------------------ paired fine-tunes per seed
    probe_texts = {r["text"] for r in probe}
    labellable = [r for r in sentences if r["text"] not in probe_texts]
    control: list[list[bool]] = []
    treatment: list[list[bool]] = []
    for seed in range(SEEDS):
        drawn = random.Random(100 + seed).sample(labellable, LABELS + VALIDATION)
        train, validation = drawn[:LABELS], drawn[LABELS:]
        for arm, base, out in (("fine-tune alone", "minilm", control), ("TAPT + fine-tune", tapt_model, treatment)):
            t0 = time.perf_counter()
            model_dir, metrics = finetune(base, train, validation, 42 + seed, work / f"seed{seed}-{base == tapt_model and 'tapt' or 'base'}")
            out.append(correct_on(model_dir, held))
            print(
                f"seed {seed} {arm:17s} held-out accuracy {sum(out[-1]) / len(held):.4f} (best validation step "
                f"{metrics.get('best_step')} of {metrics['steps']}, {time.perf_counter() - t0:.0f}s; load "
                f"{os.getloadavg()[0]:.2f})",
                flush=True,
            )
    ci = seeds_ci(control, treatment)
    base_acc = sum(map(sum, control)) / (len(held) * SEEDS)
    tapt_acc = sum(map(sum, treatment)) / (len(held) * SEEDS)
    print(describe(ci, "TAPT gain"))
    print(
        f"RESULT tapt gain={ci['delta']:.4f} ci_low={ci['lower']:.4f} ci_high={ci['upper']:.4f} seeds={SEEDS} "
        f"labels={LABELS} base_acc={base_acc:.4f} tapt_acc={tapt_acc:.4f} ppl_before={before:.1f} ppl_after={after:.1f} "
        f"pretrain_min={pretrain_min:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
