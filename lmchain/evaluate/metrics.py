"""Classification metrics, calibration and slices, from labels, predictions and probabilities.

Plain numpy on purpose: the numbers must be the same wherever they are computed (evaluate
stage, tests, report) and easy to check by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(y_true, y_pred, n_labels: int) -> dict[str, Any]:
    """Accuracy, macro/micro F1, per-class P/R/F1 and the confusion matrix (rows: true label)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    confusion = np.zeros((n_labels, n_labels), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(n_labels), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n_labels), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_labels), where=denom > 0)
    n = len(y_true)
    accuracy = float(tp.sum() / n) if n else 0.0
    return {
        "accuracy": accuracy,
        "macro_f1": float(f1.mean()) if n_labels else 0.0,
        # Single-label classification: micro-F1 equals accuracy; reported under its own name.
        "micro_f1": accuracy,
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": actual.tolist(),
        },
        "per_class_f1": f1.tolist(),
        "confusion": confusion.tolist(),
        "n": n,
    }


def calibration(y_true, probs, n_bins: int = 10) -> dict[str, Any]:
    """Expected calibration error of the top-class confidence, with the reliability bins."""
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true, dtype=int)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        acc: float | None = None  # an empty bin has neither
        mean_conf: float | None = None
        if count:
            acc, mean_conf = float(correct[mask].mean()), float(conf[mask].mean())
            ece += count / len(conf) * abs(acc - mean_conf)
        bins.append(
            {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "accuracy": acc, "confidence": mean_conf}
        )
    return {"ece": float(ece), "bins": bins}


def length_buckets(edges: list[int]) -> list[str]:
    """Bucket names in increasing order, e.g. [8, 16] -> 'words<=8', 'words 9-16', 'words>16'."""
    names, lo = [], 0
    for edge in edges:
        names.append(f"words<={edge}" if lo == 0 else f"words {lo + 1}-{edge}")
        lo = edge
    return names + [f"words>{lo}"]


def length_bucket(text: str, edges: list[int]) -> str:
    n = len(text.split())
    names = length_buckets(edges)
    return next((names[i] for i, edge in enumerate(edges) if n <= edge), names[-1])


def slice_keys(example: dict, families: list[str], length_edges: list[int], label_names: list[str]) -> list[str]:
    """The slices an example belongs to, as 'family=value' names."""
    keys = []
    for family in families:
        if family == "length":
            keys.append(f"length={length_bucket(example['text'], length_edges)}")
        elif family == "label":
            keys.append(f"label={label_names[example['label']]}")
        else:  # any other field of the example, e.g. source
            keys.append(f"{family}={example.get(family, 'unknown')}")
    return keys


def slice_members(examples: list[dict], families, length_edges, label_names) -> dict[str, list[int]]:
    """{slice: example indices} for every slice with at least one example, in display order."""
    members: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        for key in slice_keys(ex, families, length_edges, label_names):
            members.setdefault(key, []).append(i)
    # Families in configured order, length buckets short to long, other values alphabetical.
    buckets = {f"length={b}": i for i, b in enumerate(length_buckets(length_edges))}

    def order(key: str):
        family = key.split("=", 1)[0]
        return (families.index(family), buckets.get(key, 0), key)

    return {key: members[key] for key in sorted(members, key=order)}


def slice_accuracy(examples: list[dict], correct, families, length_edges, label_names) -> dict[str, dict]:
    """{slice: {n, accuracy}} for every slice with at least one example."""
    correct = np.asarray(correct, dtype=float)
    return {
        key: {"n": len(idx), "accuracy": float(correct[idx].mean())}
        for key, idx in slice_members(examples, families, length_edges, label_names).items()
    }
