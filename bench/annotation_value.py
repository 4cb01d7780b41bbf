"""What semi-automatic labels are worth on SST-2: three fine-tuned MiniLM-L6 models, one dev set.

- human500: 500 human labels alone (SST-2's own labels of 500 random train texts). This model
  then plays the current champion for the next one.
- mixed: the same 500 human labels plus semi-automatic labels on the rest of the pool
  (BENCH_AV_REST texts, their SST-2 labels hidden): VADER, keyword and regex labelling functions
  and the champion's pre-labels, combined by the Dawid-Skene label model anchored on the 500
  human labels (lmchain.annotate.lfs with configs/sst2.yaml's annotate.weak); weak labels below
  min_confidence are dropped, as the annotate stage does.
- all_human: human labels on the whole pool (the 500 plus the rest with their SST-2 labels).
"All human labels" is capped at 500 + BENCH_AV_REST texts to fit 2 shared CPU cores.

All three are scored on the same seeded sample of BENCH_AV_DEV SST-2 dev texts.
Ends with ``RESULT annotation_value ratio=<mixed/human500> acc=<mixed> baseline_acc=<human500>
all_human_acc=... weak_accuracy=...``.

Environment: BENCH_AV_HUMAN (500), BENCH_AV_REST (1500), BENCH_AV_DEV (1000; 0 = all 6,735),
BENCH_AV_EPOCHS_SMALL (2, for the 500), BENCH_AV_EPOCHS (1, for the larger sets), BENCH_AV_MODELS
(human500,all_human; human500 also trains mixed, which needs it as the champion).
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
# A subset of the models (e.g. "all_human" in a second process while the first trains the others).
MODELS = os.environ.get("BENCH_AV_MODELS", "human500,all_human").split(",")  # human500 brings mixed


def main() -> None:
    from lmchain.annotate.lfs import build_lfs, provenance, weak_labels
    from lmchain.config import load_config
    from lmchain.serve.predictor import Predictor

    t0 = time.perf_counter()
    seen, pool = set(), []
    for r in sst2_rows("train"):
        if r["text"].lower() not in seen:
            seen.add(r["text"].lower())
            pool.append(r)
    random.Random(1).shuffle(pool)
    human, rest = pool[:HUMAN], pool[HUMAN:HUMAN + REST]
    work = Path(tempfile.mkdtemp(prefix="bench-av-"))
    print(f"{len(human)} human labels, {len(rest)} further texts (SST-2 train, shuffled); work dir {work}")

    acc_h = acc_m = acc_a = weak_acc = None
    weak: list[dict] = []
    if "human500" in MODELS:
        acc_h, champion, m = finetune(human, work / "human500", epochs=EPOCHS_SMALL, dev=DEV)
        print(f"human500: {len(human)} human labels -> dev accuracy {acc_h:.4f} ({m['bench_seconds']}s)", flush=True)

        weak_cfg = load_config("sst2").annotate.weak
        predictor = Predictor(champion, max_length=64, batch_size=128)
        lfs = build_lfs(weak_cfg, NAMES, predictor.predict)
        texts = [r["text"] for r in human] + [r["text"] for r in rest]
        gold = {i: r["label"] for i, r in enumerate(human)}
        tw = time.perf_counter()
        probs, votes, report = weak_labels(lfs, texts, len(NAMES), weak_cfg.combine, gold)
        weak = []
        for j, r in enumerate(rest):
            i = len(human) + j
            label, conf = int(probs[i].argmax()), float(probs[i].max())
            if conf >= weak_cfg.min_confidence:
                weak.append({"text": r["text"], "label": label, "confidence": conf, "held": r["label"],
                             "provenance": provenance(votes[i], lfs, label)})
        weak_acc = sum(w["label"] == w["held"] for w in weak) / max(1, len(weak))
        all_acc = sum(int(probs[len(human) + j].argmax()) == r["label"] for j, r in enumerate(rest)) / len(rest)
        print(f"semi-automatic labels ({time.perf_counter() - tw:.0f}s): {len(weak)} of {len(rest)} texts at "
              f"confidence >= {weak_cfg.min_confidence}, accuracy {weak_acc:.4f} against the hidden labels "
              f"(all {len(rest)}: {all_acc:.4f})")
        for name, entry in report.items():
            print(f"  LF {name:22s} {entry}")
        by_prov: dict[str, list[bool]] = {}
        for w in weak:
            by_prov.setdefault(w["provenance"], []).append(w["label"] == w["held"])
        for prov, hits in sorted(by_prov.items()):
            print(f"  provenance {prov:12s} {len(hits):5d} labels, accuracy {sum(hits) / len(hits):.4f}")

        acc_m, _, m = finetune(human + [{"text": w["text"], "label": w["label"]} for w in weak], work / "mixed",
                               epochs=EPOCHS, dev=DEV)
        print(f"mixed: {len(human)} human + {len(weak)} semi-automatic -> dev accuracy {acc_m:.4f} "
              f"({m['bench_seconds']}s)", flush=True)
    if "all_human" in MODELS:
        acc_a, _, m = finetune(human + rest, work / "all_human", epochs=EPOCHS, dev=DEV)
        print(f"all_human: {len(human) + len(rest)} human labels -> dev accuracy {acc_a:.4f} "
              f"({m['bench_seconds']}s)", flush=True)
    if None in (acc_h, acc_m, acc_a):
        return

    print(f"\nSST-2 dev accuracy ({DEV or 'all'} texts): human500 {acc_h:.4f}  mixed {acc_m:.4f}  "
          f"all_human {acc_a:.4f}  ({time.perf_counter() - t0:.0f}s in all)")
    print(f"RESULT annotation_value ratio={acc_m / acc_h:.4f} acc={acc_m:.4f} baseline_acc={acc_h:.4f} "
          f"all_human_acc={acc_a:.4f} weak_accuracy={weak_acc:.4f} weak_labels={len(weak)}")


if __name__ == "__main__":
    main()
