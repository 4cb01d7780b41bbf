"""Token classification (NER): CoNLL-style BIO files in, a tagger out, through the fine-tune job.

Files hold one token per line with its tag in the last column (``EU B-ORG``), sentences separated
by blank lines; ``-DOCSTART-`` lines are skipped. The model predicts a tag per word from the
word's first sub-token (the others are ignored in the loss, label -100), and is scored by
entity-level F1 over exact (type, start, end) spans, as conlleval and seqeval do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmchain.errors import InputError

IGNORE = -100  # label of sub-tokens and special tokens: no loss, no score


def read_conll(path: str | Path) -> list[dict[str, list[str]]]:
    """-> [{"tokens": [...], "tags": [...]}]; a malformed line raises InputError naming it."""
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    sentences.append({"tokens": tokens, "tags": tags})
                    tokens, tags = [], []
                continue
            if len(parts) < 2:
                raise InputError(f"{path} line {n}: expected 'token ... tag', got {line.strip()!r}")
            tag = parts[-1]
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise InputError(f"{path} line {n}: tag {tag!r} is not BIO (O, B-TYPE or I-TYPE)")
            tokens.append(parts[0])
            tags.append(tag)
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    if not sentences:
        raise InputError(f"{path}: no sentences (one 'token tag' per line, blank line between sentences)")
    return sentences


def tag_names(sentences: list[dict]) -> list[str]:
    """'O' first, then B-/I- of every entity type seen, so that ids are stable for a tag set."""
    types = sorted({t[2:] for s in sentences for t in s["tags"] if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def encode_words(tokenizer, rows: list[dict], names: list[str], max_length: int) -> list[dict[str, Any]]:
    """Tokenise pre-split words; the first sub-token of each word carries its tag id."""
    index = {n: i for i, n in enumerate(names)}
    enc = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True, max_length=max_length)
    feats = []
    for i, row in enumerate(rows):
        labels, previous = [], None
        for word in enc.word_ids(i):
            labels.append(IGNORE if word is None or word == previous else index.get(row["tags"][word], 0))
            previous = word
        feats.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels})
    return feats


def spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end) of a BIO sequence; an I- without its B- starts a span (conlleval)."""
    found: set[tuple[str, int, int]] = set()
    start: int | None = None
    kind: str | None = None  # set together with start
    for i, tag in enumerate(list(tags) + ["O"]):
        inside = tag.startswith("I-") and kind == tag[2:]
        if start is not None and kind is not None and not inside:
            found.add((kind, start, i))
            start = kind = None
        if tag.startswith("B-") or (tag.startswith("I-") and start is None):
            start, kind = i, tag[2:]
    return found


def span_counts(gold_ids: list[list[int]], pred_ids: list[list[int]], names: list[str]) -> list[int]:
    """[true positives, predicted spans, gold spans, correct words, scored words] of a batch,
    read at the positions whose gold label is not IGNORE (the words' first sub-tokens)."""
    tp = n_pred = n_gold = correct = words = 0
    for gold_row, pred_row in zip(gold_ids, pred_ids):
        keep = [(g, p) for g, p in zip(gold_row, pred_row) if g != IGNORE]
        gold = spans([names[g] for g, _ in keep])
        pred = spans([names[p] for _, p in keep])
        tp += len(gold & pred)
        n_pred += len(pred)
        n_gold += len(gold)
        correct += sum(g == p for g, p in keep)
        words += len(keep)
    return [tp, n_pred, n_gold, correct, words]


def f1_from_counts(counts: list[int]) -> tuple[float, float]:
    """-> (entity F1, word accuracy)."""
    tp, n_pred, n_gold, correct, words = counts
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, (correct / words if words else 0.0)


def train_tagger(
    cfg, base: dict, train_path: str | Path, validation_path: str | Path | None, model_dir: Path, job_dir: Path
) -> dict:
    """Fine-tune a token classifier with the fine-tune stage's launcher and settings
    (:class:`~lmchain.config.FinetuneConfig`); -> the worker's metrics."""
    from lmchain.train.launcher import launch

    train = read_conll(train_path)
    validation = read_conll(validation_path) if validation_path else []
    names = tag_names(train + validation)
    job_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in (("train", train), ("validation", validation)):
        files[split] = job_dir / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    spec = {
        "task": "ner",
        **base,
        "train_file": str(files["train"]),
        "validation_file": str(files["validation"]) if validation else None,
        "label_names": names,
        "output_dir": str(model_dir),
    }
    return launch(spec, cfg, job_dir)


class Tagger:
    """A trained tagger: words in, one BIO tag per word out."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
        self.names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def tag(self, sentences: list[list[str]], max_length: int = 128) -> list[list[str]]:
        import torch

        enc = self.tokenizer(
            sentences,
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            pred = self.model(**enc).logits.argmax(-1).tolist()
        out = []
        for i, words in enumerate(sentences):
            tags = ["O"] * len(words)  # words cut off by truncation stay 'O'
            seen = set()
            for pos, word in enumerate(enc.word_ids(i)):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[word] = self.names[pred[i][pos]]
            out.append(tags)
        return out
