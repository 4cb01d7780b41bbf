"""Evaluate: accuracy and macro-F1 of the fine-tuned model on the held-out test split."""

from __future__ import annotations

import dataclasses
import time

from lmchain import registry
from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, write_json, write_jsonl
from lmchain.config import EvaluateConfig


def classification_metrics(y_true: list[int], y_pred: list[int], n_labels: int) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows: true label, columns: predicted)."""
    confusion = [[0] * n_labels for _ in range(n_labels)]
    for t, p in zip(y_true, y_pred):
        confusion[t][p] += 1
    f1s = []
    for k in range(n_labels):
        tp = confusion[k][k]
        fp = sum(confusion[j][k] for j in range(n_labels)) - tp
        fn = sum(confusion[k]) - tp
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    n = len(y_true)
    return {"accuracy": sum(confusion[k][k] for k in range(n_labels)) / n if n else 0.0,
            "macro_f1": sum(f1s) / n_labels, "per_class_f1": f1s, "confusion": confusion, "n": n}


def run(cfg: EvaluateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import mlflow

    from lmchain.serve.predictor import Predictor

    model_dir = inputs["finetune"]["outputs"]["model"]
    test_path = inputs["annotate"]["outputs"]["test"]
    test = list(read_jsonl(test_path))
    predictor = Predictor(model_dir, batch_size=cfg.batch_size)
    t0 = time.perf_counter()
    preds = predictor.predict([r["text"] for r in test])
    seconds = time.perf_counter() - t0
    m = classification_metrics([r["label"] for r in test], [p["label_id"] for p in preds], len(predictor.labels))
    with StageOutput(ctx, "evaluate", dataclasses.asdict(cfg)) as out:
        write_jsonl(out.output("predictions", "predictions.jsonl"),
                    ({**r, "pred": p["label_id"], "scores": p["scores"]} for r, p in zip(test, preds)))
        write_json(out.output("metrics", "metrics.json"), {**m, "labels": predictor.labels})
        out.manifest.inputs = {"model": model_dir, "test": test_path}
        out.manifest.counts = {"test": len(test)}
        out.manifest.metrics = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                "examples_per_second": len(test) / seconds if seconds else 0.0}
        with registry.active_run(ctx, ctx.experiment):
            mlflow.log_metrics({f"test_{k}": v for k, v in out.manifest.metrics.items()})
            mlflow.log_dict({**m, "labels": predictor.labels}, "evaluate/metrics.json")
    return out.manifest
