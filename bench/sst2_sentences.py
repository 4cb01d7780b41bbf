"""The default SST-2 recipe, scored on complete sentences that share nothing with its training data.

Why not ``dev.tsv``: ``../shared/data/sst2`` holds GLUE's SST-2 training set cut in two, so
``dev.tsv`` rows are phrases of the same parse trees as ``train.tsv`` rows. A dev phrase shares
spans with training phrases (often it *is* the sub-phrase of a training sentence, with the same
label), so accuracy there is inflated and predicts nothing about new sentences. Only 26 dev rows of
8+ words have no 6-gram in train.

The held-out set here: a seeded sample of ``BENCH_SST2_HELDOUT`` complete sentences (rows of
train.tsv + dev.tsv that are not a span of any other row, i.e. the roots of SST's parse trees)
of 8+ words. Every row of either file that is a span of a held-out sentence, or shares any 6-gram
with one, is dropped from training: its phrases, and the rare other sentence quoting it. What is
left is the training pool; the recipe's own annotate settings split it into train/validation
(validation picks the best checkpoint; the recipe's test split is left out, as the pipeline's
fine-tune never sees it), and the recipe's fine-tune settings train it with the same DeepSpeed job
the pipeline launches. The held-out sentences are then scored with the saved model in PyTorch fp32
and as the served ONNX int8 variant.

Ends with ``RESULT sst2 acc=<int8> fp32_acc=... ci_low=... ci_high=... train_min=... heldout=...
train_rows=...`` (95% CI of the int8 accuracy by bootstrap over held-out sentences).

    .venv/bin/python bench/sst2_sentences.py
    BENCH_SST2_SET="epochs=2 learning_rate=8e-5" .venv/bin/python bench/sst2_sentences.py   # try settings

Environment: BENCH_SST2_RECIPE (sst2), BENCH_SST2_HELDOUT (1500), BENCH_SST2_SET (finetune
overrides, space-separated key=value), BENCH_SST2_LIMIT (0: all; cut the training pool for a smoke run).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECIPE = os.environ.get("BENCH_SST2_RECIPE", "sst2")
HELDOUT = int(os.environ.get("BENCH_SST2_HELDOUT", 1500))
SETTINGS = os.environ.get("BENCH_SST2_SET", "").split()
LIMIT = int(os.environ.get("BENCH_SST2_LIMIT", 0))
NGRAM = 6
MIN_WORDS = 8


def read_rows(folder: Path) -> list[tuple[str, int]]:
    rows = []
    for name in ("train.tsv", "dev.tsv"):
        for line in (folder / name).read_text(encoding="utf-8").splitlines()[1:]:
            text, _, label = line.rpartition("\t")
            if text.strip() and label.strip() in ("0", "1"):
                rows.append((text.strip(), int(label)))
    return rows


def spans(words: list[str], proper: bool) -> set[str]:
    n = len(words)
    return {" ".join(words[i:j]) for i in range(n) for j in range(i + 1, n + 1) if not (proper and j - i == n)}


def ngrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def heldout_split(rows: list[tuple[str, int]], size: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """-> (held-out complete sentences, training rows sharing no span and no 6-gram with them)."""
    inner: set[str] = set()
    for text in {t for t, _ in rows}:
        inner |= spans(text.split(), proper=True)
    complete = sorted({(t, y) for t, y in rows if t not in inner and len(t.split()) >= MIN_WORDS})
    held = random.Random(seed).sample(complete, size)
    held_spans: set[str] = set()
    held_grams: set[tuple[str, ...]] = set()
    for text, _ in held:
        held_spans |= spans(text.split(), proper=False)
        held_grams |= ngrams(text.split())
    train = [
        {"text": t, "label": y}
        for t, y in rows
        if t not in held_spans and not (ngrams(t.split()) & held_grams)
    ]
    return [{"text": t, "label": y} for t, y in held], train


def correct_on(model_dir: Path, rows: list[dict], variant: str = "fp32", cache: Path | None = None) -> list[bool]:
    """Per row, whether the saved model in the serving ``variant`` predicts its label."""
    from lmchain.serve import variants

    predictions = variants.load(model_dir, variant, cache=cache).predict([r["text"] for r in rows])
    return [p["label_id"] == r["label"] for p, r in zip(predictions, rows)]


def bootstrap_ci(correct: list[bool], samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    import numpy as np

    c = np.asarray(correct, dtype=float)
    means = c[np.random.default_rng(seed).integers(0, len(c), size=(samples, len(c)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> int:
    from lmchain.annotate.splits import stratified_split
    from lmchain.config import load_config
    from lmchain.datasets import sst2_dir
    from lmchain.train import finetune as ft, models

    os.environ.setdefault("LMCHAIN_HOME", tempfile.mkdtemp(prefix="bench-sst2-home-"))
    work = Path(tempfile.mkdtemp(prefix="bench-sst2-"))
    t0 = time.perf_counter()
    held, pool = heldout_split(read_rows(sst2_dir(download=False)), HELDOUT)
    pool = pool[:LIMIT] if LIMIT else pool
    cfg = load_config(RECIPE, [f"finetune.{s}" for s in SETTINGS] + ["finetune.report_on=null"])
    examples = [{"id": f"r{i}", **row} for i, row in enumerate(pool)]
    splits = stratified_split(examples, cfg.annotate)  # type: ignore[arg-type]
    files = {}
    for name in ("train", "validation"):
        files[name] = work / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in splits[name]))
    f = cfg.finetune
    print(
        f"held out {len(held)} complete sentences of {MIN_WORDS}+ words (positive share "
        f"{sum(r['label'] for r in held) / len(held):.3f}); training pool {len(pool)} rows after dropping every row "
        f"sharing a span or a {NGRAM}-gram with them -> train {len(splits['train'])}, validation "
        f"{len(splits['validation'])} (recipe {RECIPE}: batch {f.batch_size}, lr {f.learning_rate}, epochs {f.epochs}, "
        f"{f.lr_schedule}, {f.precision}); prepared in {time.perf_counter() - t0:.0f}s; load {os.getloadavg()}",
        flush=True,
    )
    t0 = time.perf_counter()
    metrics = ft.train_classifier(
        f, models.resolve(f.base_model), str(files["train"]), str(files["validation"]),
        cfg.annotate.label_names, work / "model", work / "job",
    )  # fmt: skip
    train_min = (time.perf_counter() - t0) / 60
    load = os.getloadavg()
    print(
        f"trained {metrics['steps']} steps in {train_min:.1f} min (load {load}); best validation macro-F1 "
        f"{metrics.get('best_macro_f1')} at step {metrics.get('best_step')}",
        flush=True,
    )
    acc = {}
    for variant in ("fp32", "onnx-int8"):
        correct = correct_on(work / "model", held, variant, cache=work / "variants")
        acc[variant] = (sum(correct) / len(correct), *bootstrap_ci(correct))
        print(f"{variant}: held-out accuracy {acc[variant][0]:.4f} (95% CI {acc[variant][1]:.4f}-{acc[variant][2]:.4f})")
    print(
        f"RESULT sst2 acc={acc['onnx-int8'][0]:.4f} fp32_acc={acc['fp32'][0]:.4f} ci_low={acc['onnx-int8'][1]:.4f} "
        f"ci_high={acc['onnx-int8'][2]:.4f} train_min={train_min:.1f} heldout={len(held)} train_rows={len(splits['train'])} "
        f"load={load[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
