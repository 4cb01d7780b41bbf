"""Paired confidence intervals for a lift measured over several seeds, shared by the benches.

A bench that claims a lift (pretraining, weak labels, active learning, feedback) trains a
control arm and a treatment arm per seed and scores both on the same test texts. The lift's
uncertainty has two sources: which seed (data sample, initialisation, order) and which test
texts. ``seeds_ci`` bootstraps both levels: it resamples seeds with replacement, and within
each drawn seed resamples the test texts, scoring the mean paired difference (treatment minus
control) each time. With one seed it reduces to the per-example paired bootstrap that the
evaluate stage uses for its champion/challenger decision.
"""

from __future__ import annotations

import numpy as np


def seeds_ci(
    control: list[list[bool]] | list[list[int]],
    treatment: list[list[bool]] | list[list[int]],
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """CI of mean(treatment - control) over seeds and texts.

    ``control[s][i]`` / ``treatment[s][i]``: whether arm's model of seed ``s`` got text ``i``
    right (the same texts in both arms of a seed). Returns the observed mean difference, the
    bootstrap bounds, and each seed's own difference.
    """
    if len(control) != len(treatment) or not control:
        raise ValueError("give both arms' per-text correctness for the same, non-empty list of seeds")
    diffs = []
    for s, (a, b) in enumerate(zip(control, treatment)):
        if len(a) != len(b) or not len(a):
            raise ValueError(f"seed {s}: both arms must be scored on the same, non-empty texts")
        diffs.append(np.asarray(b, dtype=float) - np.asarray(a, dtype=float))
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for k in range(samples):
        drawn = rng.integers(0, len(diffs), size=len(diffs))
        means[k] = np.mean([diffs[s][rng.integers(0, len(diffs[s]), size=len(diffs[s]))].mean() for s in drawn])
    alpha = (1 - confidence) / 2
    return {
        "delta": float(np.mean([d.mean() for d in diffs])),
        "lower": float(np.quantile(means, alpha)),
        "upper": float(np.quantile(means, 1 - alpha)),
        "per_seed": [round(float(d.mean()), 4) for d in diffs],
        "seeds": len(diffs),
        "confidence": confidence,
    }


def describe(ci: dict, name: str = "gain") -> str:
    """One line for a bench's log: the lift, its CI and each seed's figure, in points."""
    per_seed = ", ".join(f"{100 * d:+.2f}" for d in ci["per_seed"])
    return (
        f"{name} {100 * ci['delta']:+.2f} pt, {int(100 * ci['confidence'])}% CI "
        f"[{100 * ci['lower']:+.2f}, {100 * ci['upper']:+.2f}] over {ci['seeds']} seeds (per seed: {per_seed})"
    )
