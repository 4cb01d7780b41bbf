"""bench/paired.py: the two-level (seeds, texts) paired bootstrap that the benches' lifts report.

The benches are scripts, not a package, so the module is loaded from its file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit

PAIRED = Path(__file__).resolve().parent.parent / "bench" / "paired.py"
_spec = importlib.util.spec_from_file_location("bench_paired", PAIRED)
assert _spec and _spec.loader
paired = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired)


def test_treatment_better_on_every_text_of_every_seed():
    control = [[False] * 200 for _ in range(3)]
    treatment = [[True] * 200 for _ in range(3)]
    ci = paired.seeds_ci(control, treatment, samples=500)
    assert ci["delta"] == pytest.approx(1.0)
    assert ci["lower"] > 0 and ci["lower"] == pytest.approx(1.0)
    assert ci["per_seed"] == [1.0, 1.0, 1.0] and ci["seeds"] == 3


def test_consistent_small_lift_has_ci_above_zero():
    # Treatment right wherever control is, and on 5% more texts; control right on 70% (1,000 texts, 4 seeds).
    rng = np.random.default_rng(3)
    control, treatment = [], []
    for _ in range(4):
        a = rng.random(1000) < 0.7
        b = a | (rng.random(1000) < 0.17)  # ~5 pt more
        control.append(a.tolist())
        treatment.append(b.tolist())
    ci = paired.seeds_ci(control, treatment)
    assert 0.03 < ci["delta"] < 0.07
    assert 0 < ci["lower"] < ci["delta"] < ci["upper"]
    # The sign is treatment minus control: swapping the arms flips it.
    swapped = paired.seeds_ci(treatment, control)
    assert swapped["delta"] == pytest.approx(-ci["delta"]) and swapped["upper"] < 0


def test_identical_arms_give_zero():
    rng = np.random.default_rng(1)
    arm = [(rng.random(300) < 0.8).tolist() for _ in range(3)]
    ci = paired.seeds_ci(arm, arm, samples=500)
    assert ci["delta"] == 0.0 and ci["lower"] == 0.0 and ci["upper"] == 0.0
    assert ci["per_seed"] == [0.0, 0.0, 0.0]


def test_pure_noise_ci_contains_zero():
    # Two arms that are each right on a random 75% of texts, independently: no real difference.
    rng = np.random.default_rng(2026)
    control = [(rng.random(800) < 0.75).tolist() for _ in range(5)]
    treatment = [(rng.random(800) < 0.75).tolist() for _ in range(5)]
    ci = paired.seeds_ci(control, treatment, seed=7)
    assert ci["lower"] < 0 < ci["upper"]
    assert ci["upper"] - ci["lower"] < 0.08  # an interval, not everything


def test_seed_to_seed_spread_widens_the_interval():
    # One seed gains 20 pt, the other nothing. A per-text bootstrap of the pooled texts would give
    # about [+8.5, +11.5] pt; resampling seeds must let the interval reach both seeds' figures.
    n = 2000
    control = [[False] * n, [True] * n]
    treatment = [[True] * (n // 5) + [False] * (n - n // 5), [True] * n]
    ci = paired.seeds_ci(control, treatment, samples=2000)
    assert ci["per_seed"] == [0.2, 0.0] and ci["delta"] == pytest.approx(0.1)
    assert ci["lower"] < 0.01 and ci["upper"] > 0.19


@pytest.mark.parametrize(
    "control, treatment",
    [
        ([[1, 0, 1]], [[1, 0]]),  # texts differ within a seed
        ([[1, 0], [1, 1]], [[1, 0]]),  # seed counts differ
        ([[1, 0], [1, 1]], [[1, 0], [1, 1, 0]]),  # the second seed's texts differ
        ([], []),  # no seeds
        ([[]], [[]]),  # no texts
    ],
)
def test_mismatched_or_empty_arms_raise(control, treatment):
    with pytest.raises(ValueError):
        paired.seeds_ci(control, treatment)


def test_describe_reads_in_points():
    ci = paired.seeds_ci([[0, 0, 1, 1]] * 2, [[1, 0, 1, 1]] * 2, samples=200)
    line = paired.describe(ci, "lift")
    assert line.startswith("lift +25.00 pt, 95% CI [")
    assert "over 2 seeds (per seed: +25.00, +25.00)" in line
