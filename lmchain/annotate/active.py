"""Active learning: pick the unlabelled texts whose labels would teach the model most.

Uncertainty is the entropy of the model's class probabilities or one minus the margin between
its two most likely classes. The optional diversity term keeps the queue from spending its
budget on near-copies of one confusing sentence: items are taken greedily, each one's
uncertainty reduced by ``diversity`` times its highest cosine similarity (hashed bag of words)
to the items already taken.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("entropy", "margin", "random")
QUEUE_FORMATS = ("jsonl", "csv", "label-studio")


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=float), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    top2 = np.sort(np.asarray(probs, dtype=float), axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def uncertainty(probs: np.ndarray, strategy: str) -> np.ndarray:
    if strategy == "entropy":
        return entropy(probs)
    if strategy == "margin":
        return margin_uncertainty(probs)
    raise ValueError(f"unknown uncertainty strategy {strategy!r}; use one of {STRATEGIES[:2]}")


def _vectors(texts: list[str]):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=2**18, alternate_sign=False, norm="l2", ngram_range=(1, 2)).transform(texts)


def select(
    probs: np.ndarray | None,
    k: int,
    strategy: str = "entropy",
    texts: list[str] | None = None,
    diversity: float = 0.0,
    seed: int = 0,
    candidates: int = 10,
) -> list[int]:
    """Indices of the ``k`` items to label next, most informative first.

    ``random`` ignores ``probs``. With ``diversity > 0`` the greedy pass looks at the
    ``candidates * k`` most uncertain items only (the similarity updates cost one sparse
    product per pick).
    """
    if probs is not None:
        n = len(probs)
    elif texts is not None:
        n = len(texts)
    else:
        raise ValueError("select needs class probabilities or the texts")
    k = min(k, n)
    if k <= 0:
        return []
    if strategy == "random":
        return [int(i) for i in np.random.default_rng(seed).permutation(n)[:k]]
    if probs is None:
        raise ValueError(f"strategy {strategy!r} needs class probabilities")
    u = uncertainty(probs, strategy)
    order = np.argsort(-u, kind="stable")
    if diversity <= 0 or texts is None:
        return [int(i) for i in order[:k]]
    pool = order[: max(k, candidates * k)]
    vecs = _vectors([texts[i] for i in pool])
    score = u[pool].copy()
    max_sim = np.zeros(len(pool))
    taken: list[int] = []
    free = np.ones(len(pool), dtype=bool)
    for _ in range(k):
        adjusted = np.where(free, score - diversity * max_sim, -np.inf)
        best = int(np.argmax(adjusted))
        taken.append(int(pool[best]))
        free[best] = False
        sims = (vecs @ vecs[best].T).toarray().ravel()
        max_sim = np.maximum(max_sim, sims)
    return taken


def write_queue(
    items: list[dict], path: Path, fmt: str, label_names: list[str], from_name: str = "label", to_name: str = "text"
) -> Path:
    """Write the review queue. ``items`` hold id, text, and optionally suggested label/confidence
    and uncertainty. Label Studio gets import JSON with the suggestion as a prediction, so a
    reviewer sees it pre-selected (a choices control named ``from_name`` over ``to_name``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    elif fmt == "csv":
        cols = ["id", "text", "label", "suggested_label", "confidence", "uncertainty"]
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            writer.writeheader()
            for item in items:
                writer.writerow({**item, "label": ""})  # the reviewer fills this column in
    elif fmt == "label-studio":
        tasks = []
        for item in items:
            task: dict[str, Any] = {"data": {"text": item["text"], "lmchain_id": item["id"]}}
            if item.get("suggested_label") is not None:
                task["predictions"] = [
                    {
                        "model_version": item.get("scorer", "lmchain"),
                        "score": item.get("confidence"),
                        "result": [
                            {
                                "from_name": from_name,
                                "to_name": to_name,
                                "type": "choices",
                                "value": {"choices": [item["suggested_label"]]},
                            }
                        ],
                    }
                ]
            tasks.append(task)
        path.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        raise ValueError(f"unknown queue format {fmt!r}; use one of {QUEUE_FORMATS}")
    return path
