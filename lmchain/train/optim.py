"""Optimizer pieces shared by the training tasks: decay groups, the schedule, class weights.

Pure Python apart from the parameter objects, so the schedule and the weights are testable
on their own.
"""

from __future__ import annotations

import math
import re
from collections import Counter

# Biases and LayerNorm gains are not decayed: shrinking them only hurts (as in BERT's recipe).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")


# A transformer block's index in a parameter name: BERT's "encoder.layer.3.", GPT-2's "h.3.".
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h)\.(\d+)\.")


def layer_scales(names: list[str], decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay: name -> multiplier of the peak rate. The top block trains
    at ``decay``, each block below at one more factor of it, the embeddings at the lowest; the
    task head (and anything above the blocks) at the full rate. Lower layers hold the general
    features pretraining paid for, so they move least (Howard & Ruder 2018; ELECTRA's recipe)."""
    depth = {n: int(m.group(1)) + 1 for n in names if (m := LAYER_INDEX.search(n))}
    top = max(depth.values(), default=0) + 1
    return {n: decay ** (top - depth.get(n, 0 if "embed" in n or "wte" in n or "wpe" in n else top)) for n in names}


def decay_groups(
    named_parameters, weight_decay: float, layer_decay: float = 1.0, lr: float | None = None
) -> list[dict]:
    """AdamW parameter groups: decayed and not decayed; with ``layer_decay`` < 1 (and the peak
    ``lr``), also one group per learning-rate scale."""
    trainable = [(n, p) for n, p in named_parameters if p.requires_grad]
    if layer_decay == 1.0 or lr is None:
        return [
            {"params": [p for n, p in trainable if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
            {"params": [p for n, p in trainable if n.endswith(NO_DECAY)], "weight_decay": 0.0},
        ]
    scales = layer_scales([n for n, _ in trainable], layer_decay)
    groups: dict[tuple[float, bool], dict] = {}
    for n, p in trainable:
        no_decay = n.endswith(NO_DECAY)
        group = groups.setdefault(
            (scales[n], no_decay),
            {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr": lr * scales[n]},
        )
        group["params"].append(p)
    return list(groups.values())


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
