"""A labelled near-duplicate set and pairwise precision/recall, to measure MinHash-LSH settings.

Each base document gets edited copies (random words replaced until the word n-gram Jaccard
similarity to the base falls to a target between 0.5 and 1.0). The true Jaccard of every pair in
a family is then computed exactly from the n-gram sets, so a pair is a near-duplicate when its
measured Jaccard is at least the threshold, whatever the edit intended.
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import combinations

import numpy as np

from lmchain.curate.minhash import shingle_words


def ngram_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = shingle_words(text)
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def edited_copy(text: str, target: float, rng: random.Random, n: int = 5) -> str:
    """Replace random words by new ones until Jaccard(copy, text) <= target (one word at a time,
    so the result lands just below the target)."""
    words = text.split()
    base = ngram_set(text, n)
    out = list(words)
    positions = list(range(len(words)))
    rng.shuffle(positions)
    for pos in positions:
        if jaccard(ngram_set(" ".join(out), n), base) <= target:
            break
        out[pos] = f"edit{rng.randrange(10**9)}"
    return " ".join(out)


def labelled_set(
    bases: list[str], copies_per_base: int = 3, seed: int = 0, n: int = 5, low: float = 0.5, high: float = 1.0
) -> tuple[list[str], list[int]]:
    """(texts, family id of each text): the bases followed, per base, by its edited copies."""
    rng = random.Random(seed)
    texts, family = [], []
    for f, base in enumerate(bases):
        texts.append(base)
        family.append(f)
        for _ in range(copies_per_base):
            texts.append(edited_copy(base, rng.uniform(low, high), rng, n))
            family.append(f)
    return texts, family


def true_pairs(texts: list[str], family: list[int], threshold: float, n: int = 5) -> tuple[set, dict]:
    """Pairs (i, j), i < j, of one family with Jaccard >= threshold; and every family pair's Jaccard."""
    sets = [ngram_set(t, n) for t in texts]
    members: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(family):
        members[f].append(i)
    sims = {}
    for idx in members.values():
        for i, j in combinations(idx, 2):
            sims[(i, j)] = jaccard(sets[i], sets[j])
    return {p for p, s in sims.items() if s >= threshold}, sims


def band_pairs(band_keys: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of documents that share at least one LSH band key (the candidate pairs)."""
    buckets: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(band_keys.tolist()):
        for key in row:
            buckets[key].append(i)
    pairs: set[tuple[int, int]] = set()
    for docs in buckets.values():
        if len(docs) > 1:
            pairs.update(combinations(sorted(set(docs)), 2))
    return pairs


def scores(predicted: set, truth: set, texts: list[str], n: int = 5, threshold: float = 0.8) -> dict:
    """Pairwise precision, recall, F1. A predicted pair across families counts as correct only if
    its Jaccard really reaches the threshold (bases can overlap by chance)."""
    sets: dict[int, set] = {}

    def s(i):
        if i not in sets:
            sets[i] = ngram_set(texts[i], n)
        return sets[i]

    correct = sum(1 for p in predicted if p in truth or jaccard(s(p[0]), s(p[1])) >= threshold)
    extra_truth = correct - len(predicted & truth)
    precision = correct / len(predicted) if predicted else 1.0
    recall = len(predicted & truth) / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "predicted": len(predicted),
        "true": len(truth),
        "cross_family_true": extra_truth,
    }
