import math

import numpy as np
import pytest

from lmchain.evaluate.compare import decide, mcnemar_exact, paired_bootstrap
from lmchain.evaluate.metrics import calibration, classification_metrics, length_bucket, slice_accuracy


def test_classification_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    assert m["accuracy"] == pytest.approx(0.6) and m["micro_f1"] == pytest.approx(0.6)
    assert m["confusion"] == [[1, 1], [1, 2]]
    assert m["per_class"]["precision"] == pytest.approx([0.5, 2 / 3])
    assert m["per_class"]["recall"] == pytest.approx([0.5, 2 / 3])
    assert m["per_class"]["support"] == [2, 3]
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_metrics_with_absent_class():
    m = classification_metrics([0, 0], [0, 0], 2)
    assert m["accuracy"] == 1.0 and m["per_class_f1"] == [1.0, 0.0]


def test_calibration_by_hand():
    # Two bins: confidences 0.6 (right, wrong) and 0.9 (right, right).
    probs = [[0.6, 0.4], [0.6, 0.4], [0.1, 0.9], [0.1, 0.9]]
    c = calibration([0, 1, 1, 1], probs, n_bins=2)
    # bin (0.5,1.0] holds all four: accuracy 0.75, mean confidence 0.75 -> ECE 0
    assert c["ece"] == pytest.approx(0.0)
    c = calibration([0, 1, 1, 1], probs, n_bins=10)
    # bin 0.6: acc 0.5 conf 0.6; bin 0.9: acc 1.0 conf 0.9 -> ECE = 0.5*0.1 + 0.5*0.1
    assert c["ece"] == pytest.approx(0.1)
    assert sum(b["count"] for b in c["bins"]) == 4


def test_length_buckets_and_slices():
    assert length_bucket("a b c", [8, 16]) == "words<=8"
    assert length_bucket(" ".join("w" * 1 for _ in range(12)), [8, 16]) == "words 9-16"
    assert length_bucket(" ".join("w" for _ in range(20)), [8, 16]) == "words>16"
    ex = [{"text": "a b", "label": 0, "source": "web"}, {"text": "a b c", "label": 1, "source": "file"}]
    s = slice_accuracy(ex, [1, 0], ["length", "label", "source"], [8], ["neg", "pos"])
    assert s["length=words<=8"] == {"n": 2, "accuracy": 0.5}
    assert s["label=neg"]["accuracy"] == 1.0 and s["source=file"]["accuracy"] == 0.0


def test_mcnemar_exact_and_bootstrap():
    a = [0] * 10 + [1] * 90
    b = [1] * 10 + [1] * 90
    mc = mcnemar_exact(a, b)
    assert mc["only_challenger"] == 10 and mc["only_champion"] == 0
    assert mc["p_value"] == pytest.approx(2 / 2**10)
    boot = paired_bootstrap(a, b, 2000, 0.95, seed=1)
    assert boot["delta"] == pytest.approx(0.1) and 0.03 < boot["lower"] < 0.1 < boot["upper"] <= 0.2
    same = paired_bootstrap(a, a, 500, 0.95, seed=1)
    assert same["lower"] == same["upper"] == 0.0


def test_decide_rules():
    kw = dict(margin=0.0, guarded=["length"], tolerance=0.03, min_slice_size=30, samples=1000, confidence=0.95,
              seed=0, champion="m v1")
    better, worse = [1] * 180 + [0] * 20, [1] * 140 + [0] * 60
    none = {}
    assert decide(worse, better, none, **kw).promote
    assert not decide(better, worse, none, **kw).promote
    assert not decide(better, better, none, **kw).promote
    # The challenger wins overall but loses 20 of the 100 examples of one slice the champion got right.
    champ = [1] * 100 + [0] * 100
    chall = [1] * 80 + [0] * 20 + [1] * 100
    slices = {"length=short": list(range(100)), "length=long": list(range(100, 200))}
    d = decide(champ, chall, slices, **kw)
    assert not d.promote and d.slice_regressions[0]["slice"] == "length=short" and "length=short" in d.reason
    assert d.slice_regressions[0]["drop"] == pytest.approx(0.2) and d.slice_regressions[0]["ci"][1] < 0
    assert {c["slice"] for c in d.slices_checked} == {"length=short", "length=long"}
    small = {"length=short": list(range(10))}  # too small to guard
    chall_small = [0] * 10 + [1] * 190
    assert decide(champ, chall_small, small, **kw).promote


def test_slice_drop_within_noise_does_not_block_but_observed_rule_does():
    # 34 long texts: the challenger loses 3 that the champion got right and wins 1 the other way
    # (-5.9 pt, beyond a 3 pt tolerance): 4 discordant examples are noise, not a regression.
    kw = dict(margin=0.0, guarded=["length"], tolerance=0.03, min_slice_size=30, samples=2000, confidence=0.95,
              seed=0, champion="m v1")
    rng = np.random.default_rng(0)
    champ = list(rng.random(1000) < 0.85)
    chall = list(champ)
    flips = [i for i in range(34, 1000) if not champ[i]][:60]  # a clear overall gain
    for i in flips:
        chall[i] = True
    long = list(range(34))
    right = [i for i in long if champ[i]]
    wrong = [i for i in long if not champ[i]]
    chall[right[0]] = chall[right[1]] = chall[right[2]] = False
    chall[wrong[0]] = True
    slices = {"length=words>32": long}
    d = decide(champ, chall, slices, **kw)
    check = d.slices_checked[0]
    assert round(check["drop"], 4) == round(2 / 34, 4) and check["ci"][0] < 0 < check["ci"][1]
    assert d.promote and "within noise" in d.reason
    strict = decide(champ, chall, slices, slice_test="observed", **kw)
    assert not strict.promote and strict.slice_regressions[0]["slice"] == "length=words>32"


def test_slices_are_ordered_by_family_then_length():
    ex = [{"text": " ".join(["w"] * n), "label": n % 2} for n in (40, 3, 12, 20)]
    s = slice_accuracy(ex, [1, 1, 1, 1], ["label", "length"], [8, 16], ["neg", "pos"])
    assert list(s) == ["label=neg", "label=pos", "length=words<=8", "length=words 9-16", "length=words>16"]
