"""Active learning on SST-2, simulated: the held labels of train.tsv are the oracle.

Both arms start from the same 200 random labels and the same model trained on them, then run
5 rounds: pick 200 more texts from the unlabelled pool, "ask" the oracle for their labels,
train afresh on everything labelled so far and score SST-2 dev.

The learner (BENCH_AL_LEARNER):
- ``head`` (default): a logistic-regression head on frozen MiniLM sentence embeddings. Every
  text is embedded once, so a round takes milliseconds and the whole simulation repeats over
  BENCH_AL_REPEATS seeds (10 by default). Chosen because 2 CPU cores shared by four engineers
  fine-tuned at ~2 samples/s: 11 fine-tunes per repeat did not fit.
- ``finetune``: the fine-tune stage's own job (DeepSpeed launcher, MiniLM fully fine-tuned)
  every round, BENCH_AL_REPEATS seeds (3 by default: 33 fine-tunes, over an hour on 2 CPU
  cores); the honest end-to-end version where the hardware allows.
- uncertainty: the 200 texts with the highest entropy of the current model's probabilities
  (lmchain.annotate.active.select), among a seeded sample of BENCH_AL_SCORED pool texts;
- random (the baseline): 200 texts drawn at random from the pool.
The pool is SST-2 train texts of 3+ words (what the demo recipe's curation keeps; most
1-2-word SST-2 phrases are sentiment-free fragments such as "the film 's" with an arbitrary
label). Both arms use the same training seed and settings in each round.

Each repeat is a seed: its own 200 seed labels, random picks and (finetune) training seeds; the
two arms of a repeat share the seed labels and the dev texts. The lift at the final round gets a
paired bootstrap CI over seeds and dev texts (bench/paired.py: it resamples repeats, and dev texts
within each), from each arm's per-text correctness on the same dev sample.

The curve goes to MLflow (experiment lmchain-bench, run active-learning: a metric per arm with
the label count as step, and active_learning_curve.png). Ends with
``RESULT active_learning ratio=... acc=... baseline_acc=... wins=... mean_gain=... learner=... gain=...
ci_low=... ci_high=... seeds=...`` (gain: the final round's paired mean difference, uncertainty minus
random, with its 95% CI). At default sizes the head learner's run took 149 s on 2 CPU cores shared
with other jobs (load 5-7), almost all of it embedding the 8,000 texts once.

Environment: BENCH_AL_LEARNER (head | finetune), BENCH_AL_REPEATS (seeds: 10 head, 3 finetune), BENCH_AL_POOL (6000 pool
texts, head only), BENCH_AL_ROUNDS (5), BENCH_AL_K (200), BENCH_AL_SEED_LABELS (200), BENCH_AL_SCORED (2000),
BENCH_AL_EPOCHS (2), BENCH_AL_DEV (2000 dev texts, a seeded sample: 0 = all 6,735), BENCH_AL_DIVERSITY (0: plain
entropy), LMCHAIN_HOME (default /tmp/lmchain-bench-annotation-home).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from annotation_support import finetune, predict_probs, sst2_rows

LEARNER = os.environ.get("BENCH_AL_LEARNER", "head")
REPEATS = int(os.environ.get("BENCH_AL_REPEATS", 10 if LEARNER == "head" else 3))
POOL = int(os.environ.get("BENCH_AL_POOL", 6000))
ROUNDS = int(os.environ.get("BENCH_AL_ROUNDS", 5))
K = int(os.environ.get("BENCH_AL_K", 200))
SEED_LABELS = int(os.environ.get("BENCH_AL_SEED_LABELS", 200))
SCORED = int(os.environ.get("BENCH_AL_SCORED", 2000))
EPOCHS = float(os.environ.get("BENCH_AL_EPOCHS", 2))
DEV = int(os.environ.get("BENCH_AL_DEV", 2000))
DIVERSITY = float(os.environ.get("BENCH_AL_DIVERSITY", 0))


def pool_rows() -> list[dict]:
    seen, rows = set(), []
    for r in sst2_rows("train"):
        if len(r["text"].split()) >= 3 and r["text"].lower() not in seen:
            seen.add(r["text"].lower())
            rows.append(r)
    return rows


def log_to_mlflow(curves: dict[str, list[tuple[int, float]]], summary: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from lmchain import registry
    from lmchain.home import Home

    home = Home.from_env()
    exp = registry.experiment_id("lmchain-bench", home)
    with registry.fluent(home), mlflow.start_run(experiment_id=exp, run_name="active-learning") as run:
        mlflow.log_params({"rounds": ROUNDS, "k": K, "seed_labels": SEED_LABELS, "scored_pool": SCORED,
                           "epochs": EPOCHS, "dev_texts": DEV, "diversity": DIVERSITY, "strategy": "entropy",
                           "learner": LEARNER, "repeats": summary.get("repeats", 1), "pool": POOL})
        for arm, curve in curves.items():
            for n, acc in curve:
                mlflow.log_metric(f"dev_accuracy_{arm}", acc, step=n)
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "repeats"})
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, curve in curves.items():
            ax.plot([n for n, _ in curve], [a for _, a in curve], marker="o", label=arm)
        ax.set_xlabel("labelled training texts")
        ax.set_ylabel("SST-2 dev accuracy")
        ax.set_title(f"Active learning on SST-2: {ROUNDS} rounds of {K} labels ({LEARNER})")
        ax.grid(alpha=0.3)
        ax.legend()
        mlflow.log_figure(fig, "active_learning_curve.png")
        mlflow.log_dict({"curves": curves, **summary}, "active_learning.json")
        return run.info.run_id


Curves = dict[str, list[tuple[int, float]]]
Correct = dict[str, list[bool]]  # per arm: the final round's model right or wrong on each dev text


def finetune_curves(pool: list[dict], rep: int) -> tuple[Curves, Correct]:
    """Repeat ``rep`` with the fine-tune stage's job as the learner (repeat 0: the seeds this
    bench used when it ran one repeat)."""
    import numpy as np

    from lmchain.annotate.active import select

    work = Path(tempfile.mkdtemp(prefix=f"bench-al-{rep}-"))
    if rep == 0:
        seed_idx = list(range(SEED_LABELS))
    else:
        seed_idx = [int(i) for i in np.random.default_rng(100 + rep).permutation(len(pool))[:SEED_LABELS]]
    acc0, model0, m0 = finetune([pool[i] for i in seed_idx], work / "seed", epochs=EPOCHS, dev=DEV,
                                seed=42 + 1000 * rep)
    print(f"repeat {rep} seed: {SEED_LABELS} random labels -> dev accuracy {acc0:.4f} ({m0['bench_seconds']}s; "
          f"load {os.getloadavg()})", flush=True)
    curves: Curves = {}
    correct: Correct = {}
    for arm in ("uncertainty", "random"):
        labelled, model, curve, last = list(seed_idx), model0, [(SEED_LABELS, acc0)], m0["dev_correct"]
        for rnd in range(1, ROUNDS + 1):
            taken = set(labelled)
            unlabelled = [i for i in range(len(pool)) if i not in taken]
            if arm == "random":
                picked = [unlabelled[j] for j in select(None, K, "random", texts=unlabelled, seed=1000 * rep + rnd)]
            else:
                scored = random.Random(1000 * rep + rnd).sample(unlabelled, min(SCORED, len(unlabelled)))
                texts = [pool[i]["text"] for i in scored]
                probs = predict_probs(model, texts)
                picked = [scored[j] for j in select(probs, K, "entropy", texts=texts, diversity=DIVERSITY)]
            labelled += picked  # the oracle: SST-2's own label of each picked text
            acc, model, m = finetune([pool[i] for i in labelled], work / f"{arm}{rnd}", epochs=EPOCHS,
                                     seed=42 + 1000 * rep + rnd, dev=DEV)
            curve.append((len(labelled), acc))
            last = m["dev_correct"]
            print(f"repeat {rep} {arm} round {rnd}: {len(labelled)} labels -> dev accuracy {acc:.4f} "
                  f"({m['bench_seconds']}s)", flush=True)
        curves[arm], correct[arm] = curve, last
    return curves, correct


def head_curves(pool: list[dict], repeats: int) -> list[tuple[Curves, Correct]]:
    """``repeats`` simulations with a logistic-regression head on frozen MiniLM embeddings."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from annotation_support import dev_rows, embed
    from lmchain.annotate.active import select

    dev = dev_rows(DEV)
    te = time.perf_counter()
    x_pool = embed([r["text"] for r in pool])
    x_dev = embed([r["text"] for r in dev])
    print(f"embedded {len(pool)} pool + {len(dev)} dev texts in {time.perf_counter() - te:.0f}s "
          f"(load {os.getloadavg()})", flush=True)
    y_pool = np.array([r["label"] for r in pool])
    y_dev = np.array([r["label"] for r in dev])

    def fit(idx: list[int]):
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(x_pool[idx], y_pool[idx])
        hits = clf.predict(x_dev) == y_dev
        return clf, float(hits.mean()), [bool(h) for h in hits]

    runs = []
    for rep in range(repeats):
        seed_idx = [int(i) for i in np.random.default_rng(100 + rep).permutation(len(pool))[:SEED_LABELS]]
        clf0, acc0, hits0 = fit(seed_idx)
        curves: Curves = {}
        correct: Correct = {}
        for arm in ("uncertainty", "random"):
            labelled, clf, curve, hits = list(seed_idx), clf0, [(SEED_LABELS, acc0)], hits0
            for rnd in range(1, ROUNDS + 1):
                taken = set(labelled)
                unlabelled = np.array([i for i in range(len(pool)) if i not in taken])
                if arm == "random":
                    picked = unlabelled[select(None, K, "random", texts=list(unlabelled), seed=1000 * rep + rnd)]
                else:
                    probs = clf.predict_proba(x_pool[unlabelled])
                    picked = unlabelled[select(probs, K, "entropy", texts=[pool[i]["text"] for i in unlabelled],
                                               diversity=DIVERSITY)]
                labelled += [int(i) for i in picked]
                clf, acc, hits = fit(labelled)
                curve.append((len(labelled), acc))
            curves[arm], correct[arm] = curve, hits
        print(f"repeat {rep}: uncertainty {' '.join(f'{a:.4f}' for _, a in curves['uncertainty'])} | "
              f"random {' '.join(f'{a:.4f}' for _, a in curves['random'])}", flush=True)
        runs.append((curves, correct))
    return runs


def main() -> None:
    from paired import describe, seeds_ci

    t0 = time.perf_counter()
    pool = pool_rows()
    random.Random(0).shuffle(pool)
    if LEARNER == "finetune":
        print(f"pool: {len(pool)} SST-2 train texts of 3+ words; learner: MiniLM fine-tuned each round, "
              f"{REPEATS} repeats")
        done = [finetune_curves(pool, rep) for rep in range(REPEATS)]
    else:
        pool = pool[:POOL]
        print(f"pool: {len(pool)} SST-2 train texts of 3+ words; learner: logistic regression on frozen MiniLM "
              f"embeddings, {REPEATS} repeats")
        done = head_curves(pool, REPEATS)
    runs = [curves for curves, _ in done]
    # The curve: mean over repeats at each label count.
    curves = {arm: [(n, round(sum(r[arm][i][1] for r in runs) / len(runs), 4))
                    for i, (n, _) in enumerate(runs[0][arm])] for arm in ("uncertainty", "random")}
    unc, rnd_ = curves["uncertainty"], curves["random"]
    wins = sum(a > b for (_, a), (_, b) in zip(unc[1:], rnd_[1:]))
    mean_gain = sum(a - b for (_, a), (_, b) in zip(unc[1:], rnd_[1:])) / ROUNDS
    final_gains = [r["uncertainty"][-1][1] - r["random"][-1][1] for r in runs]
    # The final round's lift, paired by repeat and dev text: the control is random selection.
    ci = seeds_ci([c["random"] for _, c in done], [c["uncertainty"] for _, c in done])
    summary = {"final_accuracy_uncertainty": unc[-1][1], "final_accuracy_random": rnd_[-1][1],
               "rounds_won": wins, "mean_gain": round(mean_gain, 4), "seed_accuracy": unc[0][1],
               "repeats": len(runs), "repeats_won_at_final_round": sum(g > 0 for g in final_gains),
               "learner": LEARNER, "final_gain": round(ci["delta"], 4), "final_gain_ci_low": round(ci["lower"], 4),
               "final_gain_ci_high": round(ci["upper"], 4)}
    print(f"\nSST-2 dev accuracy ({DEV or 'all'} dev texts), mean of {len(runs)} repeat(s)")
    print("labels  uncertainty  random   gain")
    for (n, a), (_, b) in zip(unc, rnd_):
        print(f"{n:6d}  {a:.4f}       {b:.4f}   {a - b:+.4f}")
    print(f"final-round gain per repeat: {' '.join(f'{g:+.4f}' for g in final_gains)}")
    print(f"final round ({unc[-1][0]} labels), uncertainty over random: {describe(ci)}")
    run_id = log_to_mlflow(curves, {**summary, "runs": runs})
    print(f"MLflow: experiment lmchain-bench, run {run_id} (active_learning_curve.png) in "
          f"{os.environ['LMCHAIN_HOME']}/mlflow; {time.perf_counter() - t0:.0f}s in all; load {os.getloadavg()}")
    print(f"RESULT active_learning ratio={unc[-1][1] / rnd_[-1][1]:.4f} acc={unc[-1][1]:.4f} "
          f"baseline_acc={rnd_[-1][1]:.4f} wins={wins}/{ROUNDS} mean_gain={mean_gain:.4f} learner={LEARNER} "
          f"gain={ci['delta']:.4f} ci_low={ci['lower']:.4f} ci_high={ci['upper']:.4f} seeds={ci['seeds']}")


if __name__ == "__main__":
    main()
