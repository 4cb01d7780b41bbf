"""Optimizer pieces shared by the training tasks: decay groups, the schedule, class weights.

Pure Python apart from the parameter objects, so the schedule and the weights are testable
on their own.
"""

from __future__ import annotations

import math
from collections import Counter

# Biases and LayerNorm gains are not decayed: shrinking them only hurts (as in BERT's recipe).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")


def decay_groups(named_parameters, weight_decay: float) -> list[dict]:
    trainable = [(n, p) for n, p in named_parameters if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in trainable if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]


def lr_factor(step: int, total: int, warmup: int, kind: str = "linear") -> float:
    """Multiplier of the peak rate at ``step`` (0-based): linear warm-up, then linear or cosine
    decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def balanced_class_weights(labels: list[int], n_classes: int) -> list[float]:
    """n / (k * count) per class, as scikit-learn's 'balanced': rare classes weigh more. A class
    absent from the training data gets weight 1 (its loss term never occurs anyway)."""
    counts = Counter(labels)
    n = len(labels)
    return [n / (n_classes * counts[c]) if counts[c] else 1.0 for c in range(n_classes)]


def macro_f1(confusion: list[list[int]]) -> float:
    """Macro-averaged F1 of a confusion matrix (rows: true label, columns: prediction)."""
    k = len(confusion)
    f1s = []
    for c in range(k):
        tp = confusion[c][c]
        predicted = sum(confusion[r][c] for r in range(k))
        actual = sum(confusion[c])
        f1s.append(0.0 if tp == 0 else 2 * tp / (predicted + actual))
    return sum(f1s) / k


def accuracy(confusion: list[list[int]]) -> float:
    total = sum(map(sum, confusion))
    return sum(confusion[c][c] for c in range(len(confusion))) / max(1, total)
