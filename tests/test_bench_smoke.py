"""Toy-size runs of the benches that report a paired CI over seeds, so a broken bench fails here
rather than in the hour it takes at full size.

Only benches that shrink to well under a minute are here: bench/active_learning.py (its default
learner embeds each text once and fits a logistic-regression head per round). Left out:
bench/annotation_value.py, whose every arm is a DeepSpeed fine-tune (a toy fine-tune of 40 texts took
~50 s on 2 shared CPU cores, and a seed is three of them plus the weak labelling: a 2-seed toy run
took 281 s), and bench/feedback_loop.py, which starts Airflow (`airflow standalone`) and trains
three models through the pipeline."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, needs_sst2, subprocess_env

pytestmark = needs_sst2


def result_fields(stdout: str, name: str) -> dict[str, str]:
    lines = [line for line in stdout.splitlines() if line.startswith(f"RESULT {name} ")]
    assert len(lines) == 1, stdout[-3000:]
    return dict(item.split("=", 1) for item in lines[0].split()[2:])


def test_active_learning_bench_reports_the_final_lift_with_a_paired_ci_over_seeds(tmp_path):
    env = subprocess_env(tmp_path / "home")
    env.update(BENCH_AL_POOL="300", BENCH_AL_DEV="200", BENCH_AL_ROUNDS="2", BENCH_AL_K="30",
               BENCH_AL_SEED_LABELS="40", BENCH_AL_REPEATS="3")
    proc = subprocess.run([sys.executable, "bench/active_learning.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    fields = result_fields(proc.stdout, "active_learning")
    # The fields it always had are kept.
    assert {"ratio", "acc", "baseline_acc", "wins", "mean_gain", "learner"} <= set(fields)
    assert fields["learner"] == "head" and fields["wins"].endswith("/2")
    assert fields["seeds"] == "3"
    assert sum(line.startswith("repeat ") for line in proc.stdout.splitlines()) == 3
    gain, low, high = float(fields["gain"]), float(fields["ci_low"]), float(fields["ci_high"])
    assert low <= gain <= high and low < high
    # The paired mean difference on the same dev texts is the difference of the mean accuracies.
    assert abs(gain - (float(fields["acc"]) - float(fields["baseline_acc"]))) < 2e-4
    assert "uncertainty over random: gain" in proc.stdout
