"""Real tiny classifiers with known strengths, trained in seconds, for the promotion tests.

Short texts carry the sentiment in one set of words, long texts in another, so a model can be
made good or bad on each length slice by what it is trained on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SHORT_WORDS = {1: ["good", "great", "nice", "fun"], 0: ["bad", "awful", "poor", "dull"]}
LONG_WORDS = {1: ["excellent", "wonderful"], 0: ["terrible", "horrible"]}
FILLER = "the film follows a family across many years in a small town by the sea".split()


def example(i: int, long: bool) -> dict:
    label = i % 2
    if long:
        word = LONG_WORDS[label][(i // 2) % 2]
        text = " ".join(FILLER[: 10 + i % 4]) + f" and it is {word}"
    else:
        word = SHORT_WORDS[label][(i // 2) % 4]
        text = f"simply {word}"
    return {"id": f"{'L' if long else 'S'}{i}", "text": text, "label": label, "source": "synthetic"}


def dataset(n_short: int, n_long: int, offset: int = 0) -> list[dict]:
    return [example(offset + i, False) for i in range(n_short)] + [example(offset + i, True) for i in range(n_long)]


def train_tiny(path: Path, rows: list[dict], steps: int = 60, seed: int = 0) -> Path:
    """A tiny BERT classifier trained with a plain torch loop (fixture, not the product path)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from lmchain.train.models import TINY_BERT, packaged_minilm

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
    config = AutoConfig.for_model(**TINY_BERT, num_labels=2, id2label={0: "negative", 1: "positive"},
                                  label2id={"negative": 0, "positive": 1})
    model = AutoModelForSequenceClassification.from_config(config)
    if rows and steps:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        rng = random.Random(seed)
        model.train()
        for _ in range(steps):
            batch = rng.sample(rows, min(32, len(rows)))
            enc = tokenizer([r["text"] for r in batch], padding=True, return_tensors="pt")
            loss = model(**enc, labels=torch.tensor([r["label"] for r in batch])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
