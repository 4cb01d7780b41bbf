"""Semi-automatic labels: labelling functions, model pre-labels, and their combination.

A labelling function (LF) votes a label or abstains on each text. Rule LFs are cheap and
precise on what they cover (a lexicon, keywords, regexes); the current champion model covers
everything with a confidence. Their votes are combined either by a weighted vote (weights from
each LF's accuracy on human-labelled texts) or by a label model: Dawid-Skene EM over the LFs as
voters (as Snorkel's label model does, without needing gold), anchored on human labels where
there are some. Every weak label carries its provenance and confidence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lmchain.annotate.aggregate import dawid_skene

ABSTAIN = -1


@dataclass
class LabellingFunction:
    """``apply(texts) -> (labels, confidences)``; label ``ABSTAIN`` where it has no opinion."""

    name: str
    kind: str  # "rule" or "model": the provenance of the labels it gives
    apply: Callable[[list[str]], tuple[np.ndarray, np.ndarray]] = field(repr=False)


def vader_lf(negative: int, positive: int, threshold: float = 0.05) -> LabellingFunction:
    """VADER's compound score (Hutto & Gilbert 2014): >= threshold positive, <= -threshold negative."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def apply(texts: list[str]):
        scores = np.array([analyzer.polarity_scores(t)["compound"] for t in texts])
        labels = np.where(scores >= threshold, positive, np.where(scores <= -threshold, negative, ABSTAIN))
        return labels, np.abs(scores)

    return LabellingFunction("vader", "rule", apply)


def keyword_lf(label: int, words: list[str], name: str) -> LabellingFunction:
    """Votes ``label`` when any of ``words`` occurs as a whole word (case-insensitive)."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    return regex_lf(label, pattern.pattern, name, flags=re.IGNORECASE)


def regex_lf(label: int, pattern: str, name: str, flags: int = re.IGNORECASE) -> LabellingFunction:
    compiled = re.compile(pattern, flags)

    def apply(texts: list[str]):
        hits = np.array([bool(compiled.search(t)) for t in texts], dtype=bool)
        return np.where(hits, label, ABSTAIN), hits.astype(float)

    return LabellingFunction(name, "rule", apply)


def model_lf(
    predict: Callable[[list[str]], list[dict]], min_confidence: float = 0.0, name: str = "champion"
) -> LabellingFunction:
    """Pre-labels from a classifier (``Predictor.predict``); abstains below ``min_confidence``."""

    def apply(texts: list[str]):
        preds = predict(texts)
        labels = np.array([p["label_id"] for p in preds], dtype=int)
        conf = np.array([max(p["scores"].values()) for p in preds], dtype=float)
        return np.where(conf >= min_confidence, labels, ABSTAIN), conf

    return LabellingFunction(name, "model", apply)


def apply_lfs(lfs: list[LabellingFunction], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (votes [texts x LFs], confidences [texts x LFs]); votes are label ids or ABSTAIN."""
    if not lfs or not texts:
        return np.full((len(texts), len(lfs)), ABSTAIN, dtype=int), np.zeros((len(texts), len(lfs)))
    cols = [lf.apply(texts) for lf in lfs]
    return (np.stack([c[0] for c in cols], axis=1).astype(int), np.stack([c[1] for c in cols], axis=1))


def lf_report(lfs: list[LabellingFunction], votes: np.ndarray, gold: dict[int, int]) -> dict[str, dict]:
    """Coverage of each LF, and its accuracy on the rows with a human label (``gold``: row -> label)."""
    out = {}
    rows = np.array(sorted(gold), dtype=int)
    truth = np.array([gold[r] for r in rows], dtype=int)
    for j, lf in enumerate(lfs):
        col = votes[:, j]
        entry = {"kind": lf.kind, "coverage": round(float((col != ABSTAIN).mean()) if len(col) else 0.0, 4)}
        if len(rows):
            voted = col[rows] != ABSTAIN
            entry["gold_votes"] = int(voted.sum())
            if voted.any():
                entry["accuracy"] = round(float((col[rows][voted] == truth[voted]).mean()), 4)
        out[lf.name] = entry
    return out


def weighted_vote(votes: np.ndarray, n_classes: int, accuracies: list[float | None]) -> np.ndarray:
    """Per-row class probabilities from LF votes weighted by log-odds of their accuracy.

    With a K-class LF of accuracy a, a vote multiplies the odds of its label by
    (K-1)·a/(1-a): the weight is that log. An LF with no measured accuracy counts as 0.7.
    """
    weights = []
    for acc in accuracies:
        a = min(max(acc if acc is not None else 0.7, 1e-3), 1 - 1e-3)
        weights.append(math.log((n_classes - 1) * a / (1 - a)))
    scores = np.zeros((len(votes), n_classes))
    for j, w in enumerate(weights):
        col = votes[:, j]
        voted = col != ABSTAIN
        scores[np.flatnonzero(voted), col[voted]] += w
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    return probs / probs.sum(axis=1, keepdims=True)


def label_model(votes: np.ndarray, n_classes: int, gold: dict[int, int] | None = None) -> np.ndarray:
    """Per-row class probabilities from a Dawid-Skene model over the LFs (abstains are no vote);
    rows in ``gold`` anchor the LFs' confusion matrices. Rows no LF voted on get the prior."""
    flat = [(i, j, int(votes[i, j])) for i, j in zip(*np.nonzero(votes != ABSTAIN))]
    probs = np.full((len(votes), n_classes), 1.0 / n_classes)
    if not flat:
        return probs
    items, post, _, priors = dawid_skene(flat, n_classes, fixed=gold)
    probs[:] = priors
    probs[np.array(items, dtype=int)] = post
    return probs


def provenance(votes_row: np.ndarray, lfs: list[LabellingFunction], label: int) -> str:
    """'rule', 'model' or 'rule+model': the kinds of LF that voted for the chosen label."""
    kinds = sorted({lf.kind for lf, v in zip(lfs, votes_row) if v == label})
    return "+".join(kinds) if kinds else "prior"


def build_lfs(
    cfg, names: list[str], predict: Callable[[list[str]], list[dict]] | None = None
) -> list[LabellingFunction]:
    """The LFs a ``WeakLabelConfig`` asks for; ``predict`` is the champion's, when there is one."""
    from lmchain.errors import ConfigError

    def label_id(name: str, key: str) -> int:
        if name not in names:
            raise ConfigError(
                f"config key 'annotate.weak.{key}': label '{name}' is not one of annotate.label_names {names}"
            )
        return names.index(name)

    lfs: list[LabellingFunction] = []
    if cfg.vader:
        lfs.append(vader_lf(label_id("negative", "vader"), label_id("positive", "vader"), cfg.vader_threshold))
    for name, words in sorted(cfg.keywords.items()):
        if words:
            lfs.append(keyword_lf(label_id(name, "keywords"), list(words), f"keywords:{name}"))
    for name, patterns in sorted(cfg.regexes.items()):
        for n, pattern in enumerate(patterns if isinstance(patterns, list) else [patterns]):
            try:
                lfs.append(regex_lf(label_id(name, "regexes"), pattern, f"regex:{name}:{n}"))
            except re.error as exc:
                raise ConfigError(
                    f"config key 'annotate.weak.regexes.{name}[{n}]': bad regular expression {pattern!r} ({exc})"
                ) from None
    if cfg.champion and predict is not None:
        lfs.append(model_lf(predict, cfg.champion_min_confidence))
    return lfs


def weak_labels(
    lfs: list[LabellingFunction], texts: list[str], n_classes: int, combine: str, gold: dict[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Votes of ``lfs`` on ``texts`` combined -> (probabilities [texts x classes], votes, LF report).

    ``gold`` (row -> human label) measures each LF's accuracy (the weighted vote's weights) and
    anchors the label model; rows in it are part of ``texts`` only for that purpose."""
    gold = gold or {}
    votes, _ = apply_lfs(lfs, texts)
    report = lf_report(lfs, votes, gold)
    if combine == "weighted_vote":
        probs = weighted_vote(votes, n_classes, [report[lf.name].get("accuracy") for lf in lfs])
    else:
        probs = label_model(votes, n_classes, gold)
    return probs, votes, report
