"""Several votes per item -> one label: majority vote or a Dawid-Skene model, and agreement.

A vote is ``(item, voter, label id)``. Voters are human annotators, or labelling functions when
the label model combines weak labels (``lmchain.annotate.lfs``): the same EM serves both.
Dawid & Skene (1979) estimate one confusion matrix per voter, so a careless annotator's votes
count for less than a careful one's, which a plain majority cannot do.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from lmchain.artifacts import sha256_text

Vote = tuple[Hashable, Hashable, int]  # (item, voter, label id)
# dawid_skene hands back the items and voters it was given: text hashes, row numbers, names
Item = TypeVar("Item", bound=Hashable)
Voter = TypeVar("Voter", bound=Hashable)


def majority_vote(labels: Iterable[int]) -> tuple[int | None, float]:
    """-> (label, share of votes it got); (None, share) when the top labels tie."""
    counts = Counter(labels).most_common()
    if not counts:
        return None, 0.0
    total = sum(c for _, c in counts)
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None, counts[0][1] / total
    return counts[0][0], counts[0][1] / total


def dawid_skene(
    votes: Sequence[tuple[Item, Voter, int]],
    n_classes: int,
    fixed: Mapping[Item, int] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
) -> tuple[list[Item], np.ndarray, dict[Voter, np.ndarray], np.ndarray]:
    """EM for the Dawid-Skene model.

    ``fixed`` pins the posterior of known items (gold labels) to their label: they anchor the
    voters' confusion matrices (semi-supervised). Returns (items, posteriors [items x classes],
    {voter: confusion matrix [true x voted], rows sum to 1}, class priors).
    """
    items = sorted({v[0] for v in votes}, key=str)
    voters = sorted({v[1] for v in votes}, key=str)
    ii = {x: i for i, x in enumerate(items)}
    vi = {x: i for i, x in enumerate(voters)}
    n, w, k = len(items), len(voters), n_classes
    # counts[i, v, l]: how often voter v gave item i label l (usually 0 or 1)
    counts = np.zeros((n, w, k))
    for item, voter, label in votes:
        counts[ii[item], vi[voter], label] += 1
    fixed_rows = {ii[x]: lab for x, lab in (fixed or {}).items() if x in ii}

    # Start from the (soft) majority vote: EM from a uniform start has no reason to break symmetry.
    post = counts.sum(axis=1) + 1e-9
    post /= post.sum(axis=1, keepdims=True)
    for i, lab in fixed_rows.items():
        post[i] = np.eye(k)[lab]
    prev = None
    for _ in range(max_iter):
        # M-step: priors and each voter's confusion matrix from the current posteriors.
        priors = (post.sum(axis=0) + smoothing) / (n + k * smoothing)
        conf = np.einsum("ik,iwl->wkl", post, counts) + smoothing
        conf /= conf.sum(axis=2, keepdims=True)
        # E-step: posterior of each item's true label given its votes.
        log_post = np.log(priors)[None, :] + np.einsum("iwl,wkl->ik", counts, np.log(conf))
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        post /= post.sum(axis=1, keepdims=True)
        for i, lab in fixed_rows.items():
            post[i] = np.eye(k)[lab]
        if prev is not None and np.abs(post - prev).max() < tol:
            break
        prev = post
    return items, post, {v: conf[vi[v]] for v in voters}, priors


def cohen_kappa(a: list[int], b: list[int], n_classes: int | None = None) -> float:
    """Cohen's kappa of two raters over the same items (1: perfect, 0: chance)."""
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two equally long, non-empty lists of labels")
    k = n_classes or max(max(a), max(b)) + 1
    table = np.zeros((k, k))
    for x, y in zip(a, b):
        table[x, y] += 1
    total = table.sum()
    observed = np.trace(table) / total
    expected = float((table.sum(axis=0) * table.sum(axis=1)).sum()) / total**2
    return 1.0 if expected == 1 else float((observed - expected) / (1 - expected))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an [items x classes] table of how many raters chose each class.

    Items may have different numbers of raters (those with fewer than two are skipped): the
    per-item agreement is then normalised by each item's own rater count.
    """
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1)
    counts, raters = counts[raters >= 2], raters[raters >= 2]
    if len(counts) == 0:
        raise ValueError("fleiss_kappa needs items rated by at least two raters")
    p_item = ((counts**2).sum(axis=1) - raters) / (raters * (raters - 1))
    p_class = counts.sum(axis=0) / raters.sum()
    p_bar, p_e = p_item.mean(), (p_class**2).sum()
    return 1.0 if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


def agreement(votes: Sequence[Vote], n_classes: int, min_shared: int = 10) -> dict:
    """Inter-annotator agreement of human votes: Fleiss' kappa over items with 2+ votes, and
    Cohen's kappa for every pair of annotators who labelled at least ``min_shared`` items."""
    by_item: dict[Hashable, dict[Hashable, int]] = defaultdict(dict)
    for item, voter, label in votes:
        by_item[item][voter] = label
    multi = {i: v for i, v in by_item.items() if len(v) >= 2}
    report: dict = {
        "annotators": len({v[1] for v in votes}),
        "items": len(by_item),
        "items_with_2plus_votes": len(multi),
    }
    if not multi:
        return report
    table = np.zeros((len(multi), n_classes))
    for row, labels in enumerate(multi.values()):
        for label in labels.values():
            table[row, label] += 1
    report["fleiss_kappa"] = round(fleiss_kappa(table), 4)
    report["unanimous_share"] = round(float(np.mean([len(set(v.values())) == 1 for v in multi.values()])), 4)
    pairs = {}
    annotators = sorted({a for v in multi.values() for a in v}, key=str)
    for x, y in combinations(annotators, 2):
        shared = [(v[x], v[y]) for v in multi.values() if x in v and y in v]
        if len(shared) >= min_shared:
            pairs[f"{x}|{y}"] = round(cohen_kappa([s[0] for s in shared], [s[1] for s in shared], n_classes), 4)
    if pairs:
        report["cohen_kappa"] = pairs
        report["mean_cohen_kappa"] = round(float(np.mean(list(pairs.values()))), 4)
    return report


def aggregate_votes(votes, names: list[str], method: str):
    """Votes -> ({text hash: (text, label, confidence, provenance)}, rejects, conflicts, agreement)."""
    by_text: dict[str, list] = defaultdict(list)
    for v in votes:
        by_text[sha256_text(v.text)].append(v)
    top: dict[str, list] = {}
    for h, vs in by_text.items():
        best = max(v.precedence for v in vs)
        top[h] = [v for v in vs if v.precedence == best]  # a correction replaces the original labels
    flat = [(h, v.annotator, v.label) for h, vs in top.items() for v in vs]
    posteriors: dict[str, np.ndarray] = {}
    if method == "dawid_skene" and flat:
        items, post, _, _ = dawid_skene(flat, len(names))
        posteriors = {h: post[i] for i, h in enumerate(items)}
    labels: dict[str, tuple] = {}
    rejects: list[dict] = []
    conflicts: list[dict] = []
    for h, vs in top.items():
        text = vs[0].text
        label: int | None
        if h in posteriors:
            label, conf = int(posteriors[h].argmax()), float(posteriors[h].max())
        else:
            label, conf = majority_vote([v.label for v in vs])
        disagree = len({v.label for v in vs}) > 1
        if disagree:
            conflicts.append(
                {
                    "text": text,
                    "votes": [{"annotator": v.annotator, "label": names[v.label], "where": v.where} for v in vs],
                    "resolved": None if label is None else names[label],
                    "method": method,
                }
            )
        if label is None:
            rejects.append(
                {"text": text, "label": sorted({names[v.label] for v in vs}), "reason": "conflicting_labels"}
            )
            continue
        prov = "feedback" if all(v.provenance == "feedback" for v in vs) else "human"
        labels[h] = (text, label, round(conf, 4), prov)
    return labels, rejects, conflicts, agreement(flat, len(names)) if flat else {}
