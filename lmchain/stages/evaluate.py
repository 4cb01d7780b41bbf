"""The ``evaluate`` stage: metrics, calibration and slices of the fine-tuned model on the frozen test split,
and the champion/challenger decision against the registry's current champion.

Both models predict the same test examples in this task, so the comparison is paired. The
decision and its evidence go to the manifest (the register stage acts on it), to MLflow and
into ``report.html`` beside the figures.
"""

from __future__ import annotations

import time
from typing import Any

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, write_json, write_jsonl
from lmchain.config import EvaluateConfig

CONFIG = "evaluate"
READS = ("finetune", "gate_labels")
ASSETS: tuple[str, ...] = ()


def _predict(predictor, test: list[dict], cfg: EvaluateConfig) -> dict[str, Any]:
    """Predictions, probabilities, per-example correctness, metrics and slices of one model."""
    from lmchain.evaluate.metrics import calibration, classification_metrics, slice_accuracy

    labels = predictor.labels
    t0 = time.perf_counter()
    preds = predictor.predict([r["text"] for r in test])
    seconds = time.perf_counter() - t0
    y_true = [r["label"] for r in test]
    y_pred = [p["label_id"] for p in preds]
    probs = [[p["scores"][name] for name in labels] for p in preds]
    correct = [int(a == b) for a, b in zip(y_true, y_pred)]
    return {
        "labels": labels,
        "preds": preds,
        "correct": correct,
        "metrics": classification_metrics(y_true, y_pred, len(labels)),
        "calibration": calibration(y_true, probs, cfg.ece_bins),
        "slices": slice_accuracy(test, correct, cfg.slices, cfg.length_buckets, labels),
        "latency_ms": 1000 * seconds / max(1, len(test)),
    }


def _champion(ctx: RunContext, test: list[dict], cfg: EvaluateConfig) -> dict[str, Any] | None:
    from lmchain import registry
    from lmchain.serve import registered

    found = registered.load(f"models:/{ctx.model_name}@champion", ctx.home, batch_size=cfg.batch_size)
    if found is None:
        return None
    model, predictor = found
    result = _predict(predictor, test, cfg)
    result.update(
        name=f"{ctx.model_name} v{model.version}", version=model.version, run_id=model.tags.get(registry.RUN_TAG)
    )
    return result


def decide_against(champ: dict | None, new: dict, test: list[dict], cfg: EvaluateConfig, ctx: RunContext):
    from lmchain.evaluate.compare import Decision, decide
    from lmchain.evaluate.metrics import slice_members

    if champ is None:
        return Decision(True, "no champion yet")
    if champ["run_id"] == ctx.run_id:
        return Decision(True, f"{champ['name']} is this run's own model (rerun)", champ["name"])
    if champ["labels"] != new["labels"]:
        return Decision(
            False,
            f"label sets differ (champion {champ['labels']}, challenger {new['labels']}); promote by hand if intended",
            champ["name"],
        )
    members = slice_members(test, cfg.slices, cfg.length_buckets, new["labels"])
    return decide(
        champ["correct"],
        new["correct"],
        members,
        margin=cfg.margin,
        guarded=cfg.guarded_slices,
        tolerance=cfg.slice_tolerance,
        min_slice_size=cfg.min_slice_size,
        slice_test=cfg.slice_test,
        samples=cfg.bootstrap_samples,
        confidence=cfg.confidence,
        seed=cfg.seed,
        champion=champ["name"],
    )


def run(cfg: EvaluateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import mlflow

    from lmchain import registry
    from lmchain.evaluate.report import write_report
    from lmchain.serve.predictor import Predictor

    model_dir = inputs["finetune"]["outputs"]["model"]
    test_path = inputs["annotate"]["outputs"]["test"]
    test = list(read_jsonl(test_path))
    new = _predict(Predictor(model_dir, batch_size=cfg.batch_size), test, cfg)
    champ = _champion(ctx, test, cfg)
    decision = decide_against(champ, new, test, cfg, ctx).to_dict()
    m = new["metrics"]
    summary = {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "micro_f1": m["micro_f1"],
        "ece": new["calibration"]["ece"],
        "latency_ms": new["latency_ms"],
    }

    with StageOutput(ctx, "evaluate", cfg.model_dump()) as out:
        write_jsonl(
            out.output("predictions", "predictions.jsonl"),
            (
                {
                    **r,
                    "pred": p["label_id"],
                    "scores": p["scores"],
                    **({"champion_pred": c["label_id"]} if champ else {}),
                }
                for r, p, c in zip(test, new["preds"], champ["preds"] if champ else new["preds"])
            ),
        )
        write_json(
            out.output("metrics", "metrics.json"),
            {
                **m,
                "labels": new["labels"],
                "calibration": new["calibration"],
                "slices": new["slices"],
                "latency_ms": new["latency_ms"],
                "champion": {k: champ[k] for k in ("name", "metrics", "slices")} if champ else None,
            },
        )
        write_json(out.output("decision", "decision.json"), decision)
        files = write_report(
            out.tmp,
            title=f"Evaluation of run {ctx.run_id}",
            metrics=m,
            labels=new["labels"],
            calib=new["calibration"],
            slices=new["slices"],
            champion=champ,
            decision=decision,
            latency_ms=new["latency_ms"],
        )
        for key, path in files.items():
            out.manifest.outputs[key] = str(out.final / path.name)
        out.manifest.inputs = {"model": model_dir, "test": test_path}
        out.manifest.counts = {"test": len(test)}
        out.manifest.metrics = summary
        out.manifest.info = {
            "decision": decision,
            "labels": new["labels"],
            "champion_accuracy": champ["metrics"]["accuracy"] if champ else None,
        }
        with registry.stage_run(ctx, ctx.experiment, "evaluate"):
            mlflow.log_metrics(summary)
            mlflow.log_dict(decision, "evaluate/decision.json")
            mlflow.log_artifacts(str(out.tmp), "evaluate")
        with registry.active_run(ctx, ctx.experiment):
            mlflow.log_metrics({f"test_{k}": v for k, v in summary.items()})
    return out.manifest
