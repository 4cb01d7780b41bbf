"""Champion/challenger: is the challenger better on the same frozen test set, beyond noise?

The primary metric is accuracy, compared per example (paired). The paired bootstrap gives a
confidence interval of the improvement; McNemar's exact test gives a p-value on the
disagreements. Promotion needs the interval's lower bound above the margin and no guarded
slice that regressed.

A guarded slice regressed when its accuracy dropped by more than the tolerance and, under the
default ``slice_test="significant"``, the drop is beyond noise too: the slice's own paired
bootstrap interval lies below zero. On a small slice one example moves the accuracy by more
than a typical tolerance (1/34 = 2.9 pt), so an observed-drop rule alone blocks good models on
noise; ``slice_test="observed"`` keeps that stricter rule for those who want it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def paired_bootstrap(champion_correct, challenger_correct, samples: int, confidence: float, seed: int) -> dict:
    """CI of mean(challenger_correct - champion_correct) by resampling examples."""
    a = np.asarray(champion_correct, dtype=float)
    b = np.asarray(challenger_correct, dtype=float)
    diff = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return {
        "delta": float(diff.mean()),
        "lower": float(np.quantile(means, alpha)),
        "upper": float(np.quantile(means, 1 - alpha)),
        "samples": samples,
        "confidence": confidence,
    }


def mcnemar_exact(champion_correct, challenger_correct) -> dict:
    """Two-sided exact McNemar test on the examples where exactly one model is right."""
    a = np.asarray(champion_correct, dtype=bool)
    b = np.asarray(challenger_correct, dtype=bool)
    only_challenger = int((b & ~a).sum())
    only_champion = int((a & ~b).sum())
    n = only_challenger + only_champion
    if n == 0:
        return {"only_challenger": 0, "only_champion": 0, "p_value": 1.0}
    k = min(only_challenger, only_champion)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"only_challenger": only_challenger, "only_champion": only_champion, "p_value": min(1.0, 2 * tail)}


@dataclass
class Decision:
    promote: bool
    reason: str
    champion: str | None = None
    bootstrap: dict[str, Any] = field(default_factory=dict)
    mcnemar: dict[str, Any] = field(default_factory=dict)
    slice_regressions: list[dict[str, Any]] = field(default_factory=list)
    slices_checked: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slice_check(
    champion_correct,
    challenger_correct,
    members: dict[str, list[int]],
    *,
    guarded: list[str],
    tolerance: float,
    min_slice_size: int,
    slice_test: str,
    samples: int,
    confidence: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Every guarded slice large enough to judge, with its accuracies, drop, CI and verdict."""
    a = np.asarray(champion_correct, dtype=float)
    b = np.asarray(challenger_correct, dtype=float)
    checked = []
    for key, idx in members.items():
        if key.split("=", 1)[0] not in guarded or len(idx) < min_slice_size:
            continue
        boot = paired_bootstrap(a[idx], b[idx], samples, confidence, seed)
        drop = float(a[idx].mean() - b[idx].mean())
        regressed = drop > tolerance and (slice_test == "observed" or boot["upper"] < 0)
        checked.append(
            {
                "slice": key,
                "n": len(idx),
                "champion": float(a[idx].mean()),
                "challenger": float(b[idx].mean()),
                "drop": drop,
                "ci": [boot["lower"], boot["upper"]],
                "regressed": regressed,
            }
        )
    return checked


def decide(
    champion_correct,
    challenger_correct,
    slice_members: dict[str, list[int]],
    *,
    margin: float,
    guarded: list[str],
    tolerance: float,
    min_slice_size: int,
    samples: int,
    confidence: float,
    seed: int,
    champion: str,
    slice_test: str = "significant",
) -> Decision:
    boot = paired_bootstrap(champion_correct, challenger_correct, samples, confidence, seed)
    mc = mcnemar_exact(champion_correct, challenger_correct)
    checked = slice_check(
        champion_correct,
        challenger_correct,
        slice_members,
        guarded=guarded,
        tolerance=tolerance,
        min_slice_size=min_slice_size,
        slice_test=slice_test,
        samples=samples,
        confidence=confidence,
        seed=seed,
    )
    regressions = [c for c in checked if c["regressed"]]
    if boot["lower"] <= margin:
        reason = (
            f"accuracy change {boot['delta']:+.4f}, {int(confidence * 100)}% CI "
            f"[{boot['lower']:+.4f}, {boot['upper']:+.4f}]: lower bound does not clear margin {margin}"
        )
        return Decision(False, reason, champion, boot, mc, regressions, checked)
    if regressions:
        worst = max(regressions, key=lambda r: r["drop"])
        reason = (
            f"accuracy +{boot['delta']:.4f} (CI lower {boot['lower']:+.4f}) but guarded slice "
            f"{worst['slice']} (n={worst['n']}) drops {worst['drop']:.4f} > tolerance {tolerance}"
            + (f", CI [{worst['ci'][0]:+.4f}, {worst['ci'][1]:+.4f}] below zero" if slice_test == "significant" else "")
        )
        return Decision(False, reason, champion, boot, mc, regressions, checked)
    noisy = [c for c in checked if c["drop"] > tolerance]
    reason = (
        f"accuracy {boot['delta']:+.4f}, {int(confidence * 100)}% CI [{boot['lower']:+.4f}, "
        f"{boot['upper']:+.4f}] clears margin {margin}; McNemar p={mc['p_value']:.3g}; no guarded slice regresses"
        + (f" ({', '.join(c['slice'] for c in noisy)} dropped within noise)" if noisy else "")
    )
    return Decision(True, reason, champion, boot, mc, regressions, checked)
