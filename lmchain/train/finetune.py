"""Fine-tuning pieces: the DeepSpeed job of a sequence classifier and its MLflow curves. The
``finetune`` stage (one fine-tune, or a search's trials and the best of them) is
:mod:`lmchain.stages.finetune`.

The worker scores the validation split while it trains, keeps the weights with the best
macro-F1 and stops early when they stop improving; the saved model holds those weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmchain import registry
from lmchain.config import FinetuneConfig, LabelSource
from lmchain.home import Home
from lmchain.train.launcher import launch


def labelled_jsonl(src: LabelSource, names: list[str], path: Path) -> Path:
    """A label file (TSV/CSV/JSONL, ``${SST2}`` expanded) as ``{"text", "label"}`` lines for the
    worker. Labels are names from ``names`` or their ids; other rows are skipped and counted."""
    from lmchain.errors import InputError
    from lmchain.sources.files import read_file, resolve_files

    files = resolve_files(src.path)
    if not files:
        raise InputError(f"finetune.report_on: no file at {src.path}; give a labelled TSV/CSV/JSONL file")
    kept = skipped = 0
    with open(path, "w", encoding="utf-8") as fh:
        for file in files:
            for _, text, extra, bad in read_file(file, src.text_field):
                raw = str(extra.get(src.label_field, "")).strip()
                label = names.index(raw) if raw in names else int(raw) if raw.isdigit() else None
                if bad or label is None or label >= len(names):
                    skipped += 1
                    continue
                if src.limit is not None and kept >= src.limit:
                    break
                fh.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
                kept += 1
    if kept == 0:
        raise InputError(
            f"finetune.report_on: no usable rows in {src.path} (text column '{src.text_field}', "
            f"label column '{src.label_field}' holding {names} or their ids)"
        )
    return path


def train_classifier(
    cfg: FinetuneConfig,
    base: dict,
    train: str,
    validation: str | None,
    names: list[str],
    model_dir: Path,
    job_dir: Path,
) -> dict:
    """Launch the job; -> the worker's metrics. Used by the stage and by bench/finetune_throughput.py."""
    job_dir.mkdir(parents=True, exist_ok=True)
    report = str(labelled_jsonl(cfg.report_on, names, job_dir / "report.jsonl")) if cfg.report_on else None
    spec = {
        "task": "cls",
        **base,
        "train_file": train,
        "validation_file": validation,
        "report_file": report,
        "label_names": names,
        "output_dir": str(model_dir),
    }
    return launch(spec, cfg, job_dir)


def log_curves(run_id: str, metrics: dict, home: Home) -> None:
    """Validation curve and best-checkpoint figures, beside the loss curve log_training wrote
    (into the run ``run_id`` of ``home``'s store)."""
    c = registry.client(home)
    for step, f1, acc in metrics.get("validation_curve", []):
        c.log_metric(run_id, "finetune/val_macro_f1", f1, step=int(step))
        c.log_metric(run_id, "finetune/val_accuracy", acc, step=int(step))
    for key in (
        "best_macro_f1",
        "best_accuracy",
        "best_step",
        "best_epoch",
        "epochs_run",
        "report_accuracy",
        "report_macro_f1",
        "trainable_parameters",
        "eval_seconds",
    ):
        if metrics.get(key) is not None:
            c.log_metric(run_id, f"finetune/{key}", float(metrics[key]))
    if metrics.get("stop_reason"):
        c.set_tag(run_id, "finetune.stop_reason", metrics["stop_reason"])
