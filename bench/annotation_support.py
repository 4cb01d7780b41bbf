"""Shared by bench/annotation_value.py and bench/active_learning.py: SST-2 rows, and one
fine-tune of the packaged MiniLM on a list of labelled rows, scored on SST-2 dev.

The fine-tune is the fine-tune stage's own code (lmchain.train.finetune.train_classifier: the
DeepSpeed launcher with a CPU rank here), so the figures are what the pipeline would get.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMCHAIN_HOME", "/tmp/lmchain-bench-annotation-home")

NAMES = ["negative", "positive"]


def sst2_rows(split: str) -> list[dict]:
    """SST-2 ``split`` as {text, label} rows (texts normalised like the pipeline does)."""
    from lmchain.text import normalize_text
    from lmchain.datasets import sst2_dir

    rows = []
    with open(sst2_dir() / f"{split}.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            text, label = line.rstrip("\n").rsplit("\t", 1)
            text = normalize_text(text)
            if text:
                rows.append({"text": text, "label": int(label)})
    return rows


def finetune(rows: list[dict], workdir: Path, *, epochs: float, batch_size: int = 16, learning_rate: float = 1e-4,
             seed: int = 42, max_length: int = 64, dev: int = 0) -> tuple[float, Path, dict]:
    """Fine-tune MiniLM on ``rows`` -> (SST-2 dev accuracy, model folder, worker metrics).

    ``dev`` > 0 scores a seeded sample of that many dev texts (the same sample in every call):
    on 2 shared CPU cores scoring all 6,735 took minutes per model. The saved model scores them
    here, through the service's fp32 predictor, once: ``metrics["dev_correct"]`` holds whether it
    got each dev text right (in dev_rows' order), which the benches' paired CIs compare across
    arms; the accuracy is its mean."""
    from lmchain.config import FinetuneConfig
    from lmchain.train import models
    from lmchain.train.finetune import train_classifier

    workdir.mkdir(parents=True, exist_ok=True)
    train = workdir / "train.jsonl"
    train.write_text("".join(json.dumps({"text": r["text"], "label": int(r["label"])}) + "\n" for r in rows))
    cfg = FinetuneConfig(base_model="minilm", ranks=1, batch_size=batch_size, learning_rate=learning_rate,
                         epochs=epochs, max_length=max_length, warmup_ratio=0.1, seed=seed, patience=0,
                         timeout_s=3600)
    t0 = time.perf_counter()
    metrics = train_classifier(cfg, models.resolve("minilm"), str(train), None, NAMES, workdir / "model",
                               workdir / "job")
    metrics["bench_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["dev_correct"] = dev_correct(workdir / "model", dev, max_length)
    return sum(metrics["dev_correct"]) / len(metrics["dev_correct"]), workdir / "model", metrics


def dev_rows(limit: int) -> list[dict]:
    """SST-2 dev: all of it, or a seeded sample of ``limit`` texts (the same in every call)."""
    import random

    rows = sst2_rows("dev")
    return random.Random(7).sample(rows, min(limit, len(rows))) if limit else rows


def dev_correct(model_dir: Path, limit: int, max_length: int = 64) -> list[bool]:
    """Whether the model gets each of dev_rows(limit) right."""
    from lmchain.serve.predictor import Predictor

    rows = dev_rows(limit)
    preds = Predictor(model_dir, max_length=max_length, batch_size=128).predict([r["text"] for r in rows])
    return [p["label_id"] == r["label"] for p, r in zip(preds, rows)]


def dev_file(limit: int) -> Path:
    """SST-2 dev (all of it, or a seeded sample of ``limit`` texts) as a JSONL file."""
    rows = dev_rows(limit)
    path = Path(os.environ["LMCHAIN_HOME"]) / "bench-data" / f"sst2-dev-{limit or 'all'}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def predict_probs(model_dir: Path, texts: list[str]):
    """Class probabilities of ``texts`` under the model (numpy [texts x classes])."""
    import numpy as np

    from lmchain.serve.predictor import Predictor

    predictor = Predictor(model_dir, max_length=64, batch_size=128)
    return np.array([[p["scores"][n] for n in predictor.labels] for p in predictor.predict(texts)])


def embed(texts: list[str], batch_size: int = 128):
    """Mean-pooled, L2-normalised MiniLM sentence embeddings (numpy [texts x 384]): the packaged
    model is all-MiniLM-L6-v2, trained for exactly this pooling."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from lmchain.train.models import packaged_minilm

    folder = str(packaged_minilm())
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([texts[i] for i in idx], truncation=True, max_length=64, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * mask).sum(1) / mask.sum(1)
            out[idx] = torch.nn.functional.normalize(vec, dim=1).numpy()
    return out
