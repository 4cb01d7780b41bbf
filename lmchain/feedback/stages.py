"""The four stages of the feedback DAG (see the package docstring)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from lmchain.artifacts import (Manifest, RunContext, StageOutput, read_jsonl, write_json,
                               write_jsonl)
from lmchain.config import PipelineConfig
from lmchain.curate.steps import normalise_for_dedup, normalize_text
from lmchain.feedback import feedback_dir, labels_path

WATERMARK = "watermark.json"
TRIGGER_STATE = "trigger_state.json"


def _read_json(path: Path, default: dict) -> dict:
    return json.loads(path.read_text()) if path.is_file() else dict(default)


def _store_url(cfg: PipelineConfig, home: Path) -> str:
    from lmchain.serve.store import default_url

    return cfg.deploy.service.store_url or default_url(home)


def export(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    from lmchain.serve.store import ServingStore

    done = ctx.stage_dir("feedback_export")
    if (done / "manifest.json").is_file():  # a retried or re-run task: the same batch again
        return Manifest.read(done)
    mark_file = feedback_dir(ctx.home) / WATERMARK
    after = int(_read_json(mark_file, {"last_id": 0})["last_id"])
    store = ServingStore(_store_url(cfg, ctx.home))
    try:
        rows = store.feedback_since(after)
    finally:
        store.close()
    with StageOutput(ctx, "feedback_export", {"after_id": after}) as out:
        write_jsonl(out.output("batch", "batch.jsonl"), [
            {"text": r["text"], "predicted_label": r["predicted_label"], "correct_label": r["correct_label"],
             "feedback_id": r["feedback_id"], "request_id": r["request_id"], "created_at": r["created_at"],
             "model": r["model"], "version": r["version"], "store_id": r["id"]} for r in rows])
        last = max((r["id"] for r in rows), default=after)
        out.manifest.counts = {"records": len(rows)}
        out.manifest.info = {"after_id": after, "last_id": last}
    # Advanced only once the batch is published: a crash before this re-exports, never skips.
    write_json(mark_file, {"last_id": last, "run_id": ctx.run_id, "at": time.time()})
    return out.manifest


def gate(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import pandas as pd

    from lmchain.quality import check

    batch = Path(inputs["export"]["outputs"]["batch"])
    df = pd.DataFrame(list(read_jsonl(batch)), columns=["text", "predicted_label", "correct_label"])
    if df.empty:  # nothing new: nothing to validate, and the gate would fail on zero rows
        with StageOutput(ctx, "feedback_gate", {}) as out:
            out.manifest.outputs = {"batch": str(batch)}
            out.manifest.info = {"passed": True, "empty": True}
        return out.manifest
    names = list(cfg.annotate.label_names) or sorted(set(df["correct_label"]))
    return check(ctx, "feedback_gate", cfg.gate, {"feedback": (df, [batch])}, names, {"batch": str(batch)})


def merge(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """Fold the validated batch into the feedback labels (one row per normalised text)."""
    batch = list(read_jsonl(inputs["gate"]["outputs"]["batch"]))
    target = labels_path(ctx.home)
    merged: dict[str, dict[str, Any]] = {}
    if target.is_file():
        for row in read_jsonl(target):
            merged[normalise_for_dedup(row["text"])] = row
    new = changed = confirmations = 0
    for r in sorted(batch, key=lambda r: r["store_id"]):  # oldest first: the latest correction wins
        if r["predicted_label"] == r["correct_label"]:
            confirmations += 1  # a confirmation is a label too: keep it, it anchors the slice
        key = normalise_for_dedup(r["text"])
        row = {"text": normalize_text(r["text"]), "label": r["correct_label"], "provenance": "feedback",
               "feedback_id": r["feedback_id"], "request_id": r["request_id"], "model_version": r["version"],
               "created_at": r["created_at"], "run_id": ctx.run_id}
        if key not in merged:
            new += 1
        elif merged[key]["label"] != row["label"]:
            changed += 1
        merged[key] = row
    # Rewrite atomically: the pipeline may read the file at any moment.
    tmp = target.with_name("labels.jsonl.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp, merged.values())
    tmp.replace(target)
    with StageOutput(ctx, "feedback_merge", {}) as out:
        out.manifest.outputs = {"labels": str(target)}
        out.manifest.counts = {"batch": len(batch), "new_labels": new, "changed_labels": changed,
                               "confirmations": confirmations, "total_labels": len(merged)}
    return out.manifest


def decide(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """Retrain or not, and why. Counts accumulate across feedback runs until a trigger."""
    fb = cfg.feedback
    counts = inputs["merge"]["counts"]
    state_file = feedback_dir(ctx.home) / TRIGGER_STATE
    state = _read_json(state_file, {"pending_labels": 0, "pending_records": 0, "pending_corrections": 0})
    if state.get("last_run_id") != ctx.run_id:  # a rerun of this run must not count its batch twice
        state["pending_labels"] += counts["new_labels"] + counts["changed_labels"]
        state["pending_records"] += counts["batch"]
        state["pending_corrections"] += counts["batch"] - counts["confirmations"]
        state["last_run_id"] = ctx.run_id
    error_rate = state["pending_corrections"] / state["pending_records"] if state["pending_records"] else 0.0
    reasons = []
    if state["pending_labels"] >= fb.min_new_labels:
        reasons.append(f"{state['pending_labels']} new or changed labels >= feedback.min_new_labels="
                       f"{fb.min_new_labels}")
    if state["pending_records"] >= fb.min_batch_for_drift and error_rate > fb.max_error_rate:
        reasons.append(f"drift: {error_rate:.0%} of {state['pending_records']} feedback records correct the model "
                       f"(> feedback.max_error_rate={fb.max_error_rate:.0%})")
    trigger = bool(reasons)
    reason = "; ".join(reasons) or (f"waiting: {state['pending_labels']} of {fb.min_new_labels} new labels, "
                                    f"error rate {error_rate:.0%}")
    decision = {"trigger": trigger, "reason": reason, "pending": dict(state), "error_rate": round(error_rate, 4),
                "run_id": ctx.run_id}
    if trigger:  # the next pipeline run consumes what is pending
        state.update(pending_labels=0, pending_records=0, pending_corrections=0,
                     last_trigger={"run_id": ctx.run_id, "reason": reason, "at": time.time()})
    write_json(state_file, state)
    with StageOutput(ctx, "feedback_decide", dataclasses.asdict(fb)) as out:
        write_json(out.output("decision", "decision.json"), decision)
        out.manifest.info = decision
        out.manifest.inputs = {"labels": inputs["merge"]["outputs"]["labels"]}
    return out.manifest


STAGE_FUNCTIONS = {"export": export, "gate": gate, "merge": merge, "decide": decide}
UPSTREAM = {"export": (), "gate": ("export",), "merge": ("gate",), "decide": ("merge",)}


def run_feedback_stage(stage: str, cfg: PipelineConfig, run_id: str, upstream: dict[str, dict],
                       lmchain_home: Path | None = None) -> dict[str, Any]:
    from lmchain.artifacts import home
    from lmchain.pipeline import config_hash

    missing = [u for u in UPSTREAM[stage] if u not in upstream]
    if missing:
        raise ValueError(f"feedback stage {stage} needs the manifests of {missing}")
    ctx = RunContext(run_id, home=lmchain_home or home(), experiment=cfg.register.experiment,
                     model_name=cfg.register.model_name, config_hash=config_hash(cfg))
    return STAGE_FUNCTIONS[stage](cfg, ctx, {u: upstream[u] for u in UPSTREAM[stage]}).to_dict()


def with_feedback_labels(cfg: PipelineConfig, lm_home: Path) -> PipelineConfig:
    """The config with the merged feedback labels added to collect and annotate (when enabled)."""
    from lmchain.config import FileSource, LabelSource

    target = labels_path(lm_home)
    if not cfg.feedback.include_in_training or not target.is_file() or target.stat().st_size == 0:
        return cfg
    # Not windowed: a nightly run reads only new files, but always all the accumulated feedback.
    collect = dataclasses.replace(cfg.collect, files=[*cfg.collect.files, FileSource(path=str(target),
                                                                                     windowed=False)])
    # Lenient: one odd feedback row becomes a reject rather than failing the night's run.
    feedback = LabelSource(path=str(target), text_field="text", label_field="label", precedence=1,
                           provenance="feedback", strict=False)
    annotate = dataclasses.replace(cfg.annotate, labels=[*cfg.annotate.labels, feedback])
    return dataclasses.replace(cfg, collect=collect, annotate=annotate)
