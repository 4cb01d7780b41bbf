"""What semi-automatic labels are worth on SST-2: three fine-tuned MiniLM-L6 models per seed, one dev set.

- human500: 500 human labels alone (SST-2's own labels of 500 random train texts). This model
  then plays the current champion for the next one.
- mixed: the same 500 human labels plus semi-automatic labels on the rest of the pool
  (BENCH_AV_REST texts, their SST-2 labels hidden): VADER, keyword and regex labelling functions
  and the champion's pre-labels, combined by the Dawid-Skene label model anchored on the 500
  human labels (lmchain.annotate.lfs with configs/sst2.yaml's annotate.weak); weak labels below
  min_confidence are dropped, as the annotate stage does.
- all_human: human labels on the whole pool (the 500 plus the rest with their SST-2 labels).
"All human labels" is capped at 500 + BENCH_AV_REST texts to fit 2 shared CPU cores.

The whole comparison repeats over BENCH_AV_SEEDS seeds: seed s draws its own 500 + rest texts
(shuffle seed 1 + s) and trains with seed 42 + s, so the lift's spread over data samples and
initialisations shows (seed 0 is the single run this bench made before it had seeds). All models
are scored on the same seeded sample of BENCH_AV_DEV SST-2 dev texts, text by text, and the lift
of mixed over human500 gets a paired bootstrap CI over seeds and texts (bench/paired.py).
Ends with ``RESULT annotation_value ratio=<mixed/human500> acc=<mixed> baseline_acc=<human500>
all_human_acc=... weak_accuracy=... weak_labels=... gain=<mixed - human500> ci_low=... ci_high=...
seeds=...`` (accuracies: means over seeds; gain: the paired mean difference).

Sizes: a seed is 3 fine-tunes (500 texts x 2 epochs, ~1,900 x 1, 2,000 x 1: ~4,900 training
samples at batch 16) plus the weak labelling of 2,000 texts (32 s) and 3 x 1,000 dev predictions.
Measured on 2 CPU cores shared with other jobs (load ~6): human500 took 190 s at 5.5 samples/s, so a
seed takes ~15 min and 3 seeds ~45 min there; the ~20 min target needs a quiet machine (the fine-tune
job's own bench reached 140 samples/s at batch 64 on one). Shrinking the sets instead would change
what is measured; BENCH_AV_SEEDS=2 or BENCH_AV_REST=1000 are the knobs. Past a 1,000-text dev sample,
more seeds narrow the CI more than more dev texts do: the seed-to-seed spread is its larger part.

Environment: BENCH_AV_SEEDS (3), BENCH_AV_HUMAN (500), BENCH_AV_REST (1500), BENCH_AV_DEV (1000; 0 = all 6,735),
BENCH_AV_EPOCHS_SMALL (2, for the 500), BENCH_AV_EPOCHS (1, for the larger sets), BENCH_AV_MODELS
(human500,all_human; human500 also trains mixed, which needs it as the champion; without human500 there is no
RESULT line).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from annotation_support import NAMES, finetune, sst2_rows

HUMAN = int(os.environ.get("BENCH_AV_HUMAN", 500))
REST = int(os.environ.get("BENCH_AV_REST", 1500))
DEV = int(os.environ.get("BENCH_AV_DEV", 1000))
EPOCHS_SMALL = float(os.environ.get("BENCH_AV_EPOCHS_SMALL", 2))
EPOCHS = float(os.environ.get("BENCH_AV_EPOCHS", 1))
SEEDS = int(os.environ.get("BENCH_AV_SEEDS", 3))
# A subset of the models (e.g. "all_human" in a second process while the first trains the others).
MODELS = os.environ.get("BENCH_AV_MODELS", "human500,all_human").split(",")  # human500 brings mixed


def one_seed(seed: int, texts: list[dict], work: Path) -> dict:
    """The three models of one seed -> {arm: dev correctness per text, weak-label figures}."""
    from lmchain.annotate.lfs import build_lfs, provenance, weak_labels
    from lmchain.config import load_config
    from lmchain.serve.predictor import Predictor

    pool = list(texts)
    random.Random(1 + seed).shuffle(pool)
    human, rest = pool[:HUMAN], pool[HUMAN:HUMAN + REST]
    work = work / f"seed{seed}"
    train_seed = 42 + seed
    out: dict = {}
    if "human500" in MODELS:
        acc_h, champion, m = finetune(human, work / "human500", epochs=EPOCHS_SMALL, dev=DEV, seed=train_seed)
        out["human500"] = m["dev_correct"]
        print(f"seed {seed}: human500: {len(human)} human labels -> dev accuracy {acc_h:.4f} "
              f"({m['bench_seconds']}s; load {os.getloadavg()})", flush=True)

        weak_cfg = load_config("sst2").annotate.weak
        predictor = Predictor(champion, max_length=64, batch_size=128)
        lfs = build_lfs(weak_cfg, NAMES, predictor.predict)
        batch = [r["text"] for r in human] + [r["text"] for r in rest]
        gold = {i: r["label"] for i, r in enumerate(human)}
        tw = time.perf_counter()
        probs, votes, report = weak_labels(lfs, batch, len(NAMES), weak_cfg.combine, gold)
        weak = []
        for j, r in enumerate(rest):
            i = len(human) + j
            label, conf = int(probs[i].argmax()), float(probs[i].max())
            if conf >= weak_cfg.min_confidence:
                weak.append({"text": r["text"], "label": label, "confidence": conf, "held": r["label"],
                             "provenance": provenance(votes[i], lfs, label)})
        out["weak_accuracy"] = sum(w["label"] == w["held"] for w in weak) / max(1, len(weak))
        out["weak_labels"] = len(weak)
        all_acc = sum(int(probs[len(human) + j].argmax()) == r["label"] for j, r in enumerate(rest)) / len(rest)
        print(f"seed {seed}: semi-automatic labels ({time.perf_counter() - tw:.0f}s): {len(weak)} of {len(rest)} "
              f"texts at confidence >= {weak_cfg.min_confidence}, accuracy {out['weak_accuracy']:.4f} against the "
              f"hidden labels (all {len(rest)}: {all_acc:.4f})")
        for name, entry in report.items():
            print(f"  LF {name:22s} {entry}")
        by_prov: dict[str, list[bool]] = {}
        for w in weak:
            by_prov.setdefault(w["provenance"], []).append(w["label"] == w["held"])
        for prov, hits in sorted(by_prov.items()):
            print(f"  provenance {prov:12s} {len(hits):5d} labels, accuracy {sum(hits) / len(hits):.4f}")

        acc_m, _, m = finetune(human + [{"text": w["text"], "label": w["label"]} for w in weak], work / "mixed",
                               epochs=EPOCHS, dev=DEV, seed=train_seed)
        out["mixed"] = m["dev_correct"]
        print(f"seed {seed}: mixed: {len(human)} human + {len(weak)} semi-automatic -> dev accuracy {acc_m:.4f} "
              f"({m['bench_seconds']}s; load {os.getloadavg()})", flush=True)
    if "all_human" in MODELS:
        acc_a, _, m = finetune(human + rest, work / "all_human", epochs=EPOCHS, dev=DEV, seed=train_seed)
        out["all_human"] = m["dev_correct"]
        print(f"seed {seed}: all_human: {len(human) + len(rest)} human labels -> dev accuracy {acc_a:.4f} "
              f"({m['bench_seconds']}s; load {os.getloadavg()})", flush=True)
    return out


def main() -> None:
    from paired import describe, seeds_ci

    t0 = time.perf_counter()
    seen, texts = set(), []
    for r in sst2_rows("train"):
        if r["text"].lower() not in seen:
            seen.add(r["text"].lower())
            texts.append(r)
    work = Path(tempfile.mkdtemp(prefix="bench-av-"))
    print(f"{SEEDS} seeds of {HUMAN} human labels and {REST} further texts (SST-2 train, shuffled per seed); "
          f"dev: {DEV or 'all'} texts; work dir {work}; load {os.getloadavg()}", flush=True)
    runs = [one_seed(s, texts, work) for s in range(SEEDS)]

    def mean_acc(arm: str) -> float:
        return sum(sum(r[arm]) / len(r[arm]) for r in runs) / len(runs)

    arms = [a for a in ("human500", "mixed", "all_human") if a in runs[0]]
    print(f"\nSST-2 dev accuracy ({DEV or 'all'} texts), per seed and mean of {SEEDS}:")
    for arm in arms:
        per_seed = " ".join(f"{sum(r[arm]) / len(r[arm]):.4f}" for r in runs)
        print(f"  {arm:10s} {per_seed}  mean {mean_acc(arm):.4f}")
    if "mixed" not in arms:
        return
    ci = seeds_ci([r["human500"] for r in runs], [r["mixed"] for r in runs])
    print("mixed over human500: " + describe(ci))
    if "all_human" in arms:
        # What human labels on the rest would have added over the semi-automatic ones.
        print("all_human over mixed: " + describe(seeds_ci([r["mixed"] for r in runs],
                                                           [r["all_human"] for r in runs])))
    acc_h, acc_m = mean_acc("human500"), mean_acc("mixed")
    weak_acc = sum(r["weak_accuracy"] for r in runs) / len(runs)
    weak_n = sum(r["weak_labels"] for r in runs) / len(runs)
    all_human = f" all_human_acc={mean_acc('all_human'):.4f}" if "all_human" in arms else ""
    print(f"({time.perf_counter() - t0:.0f}s in all; load {os.getloadavg()})")
    print(f"RESULT annotation_value ratio={acc_m / acc_h:.4f} acc={acc_m:.4f} baseline_acc={acc_h:.4f}"
          f"{all_human} weak_accuracy={weak_acc:.4f} weak_labels={weak_n:.0f} gain={ci['delta']:.4f} "
          f"ci_low={ci['lower']:.4f} ci_high={ci['upper']:.4f} seeds={ci['seeds']}")


if __name__ == "__main__":
    main()
