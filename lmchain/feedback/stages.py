"""The four stages of the feedback DAG (see the package docstring)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmchain.artifacts import (Manifest, RunContext, StageOutput, read_jsonl, write_json,
                               write_jsonl)
from lmchain.config import PipelineConfig
from lmchain.curate.steps import normalise_for_dedup, normalize_text
from lmchain.errors import ConfigError, GateFailed
from lmchain.feedback import feedback_dir, labels_path

WATERMARK = "watermark.json"
TRIGGER_STATE = "trigger_state.json"


def _read_json(path: Path, default: dict) -> dict:
    return json.loads(path.read_text()) if path.is_file() else dict(default)


def _store_url(cfg: PipelineConfig, home: Path) -> str:
    from lmchain.serve.store import default_url

    return cfg.deploy.service.store_url or default_url(home)


@dataclass
class Watermark:
    """Which store ids are accounted for: merged into the labels, or held in a quarantine.

    ``last_id``: every id up to it. ``spans``: ``(after, last]`` ranges beyond it that a merge has
    accounted for too; there are any only when two merges finished out of order (two runs on one
    home), and they fold into ``last_id`` once the gap below them is merged. Only merge writes it,
    under the labels lock; export only reads it.
    """

    last_id: int = 0
    spans: list[list[int]] = field(default_factory=list)
    run_id: str | None = None
    counts: dict[str, int] | None = None

    @classmethod
    def read(cls, home: Path) -> "Watermark":
        data = _read_json(feedback_dir(home) / WATERMARK, {})
        return cls(int(data.get("last_id", 0)), [list(s) for s in data.get("spans", [])], data.get("run_id"),
                   data.get("counts"))

    def write(self, home: Path) -> None:
        write_json(feedback_dir(home) / WATERMARK, {**dataclasses.asdict(self), "at": time.time()})

    def covers(self, store_id: int) -> bool:
        return store_id <= self.last_id or any(a < store_id <= b for a, b in self.spans)

    def add(self, after: int, last: int) -> None:
        if last > after:
            self.spans.append([after, last])
        spans = []
        for a, b in sorted(self.spans):
            if b <= self.last_id:
                continue
            if a <= self.last_id:
                self.last_id = b
            elif spans and a <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], b)
            else:
                spans.append([a, b])
        # A span that reached last_id may now touch the next one: fold until there is a gap.
        while spans and spans[0][0] <= self.last_id:
            self.last_id = max(self.last_id, spans.pop(0)[1])
        self.spans = spans


def export(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """The feedback not accounted for yet. Reads the watermark, never moves it (merge does)."""
    from lmchain.serve.store import ServingStore

    done = ctx.stage_dir("feedback_export")
    if (done / "manifest.json").is_file():  # a retried or re-run task: the same batch again
        return Manifest.read(done)
    mark = Watermark.read(ctx.home)
    store = ServingStore(_store_url(cfg, ctx.home))
    try:
        rows = [r for r in store.feedback_since(mark.last_id) if not mark.covers(r["id"])]
    finally:
        store.close()
    with StageOutput(ctx, "feedback_export", {"after_id": mark.last_id}) as out:
        path = out.output("batch", "batch.jsonl")
        write_jsonl(path, [
            {"text": r["text"], "predicted_label": r["predicted_label"], "correct_label": r["correct_label"],
             "feedback_id": r["feedback_id"], "request_id": r["request_id"], "created_at": r["created_at"],
             "model": r["model"], "version": r["version"], "store_id": r["id"]} for r in rows])
        os.chmod(path, 0o600)  # users' raw texts, PII included until the gate has looked: operator-only
        out.manifest.counts = {"records": len(rows)}
        out.manifest.info = {"after_id": mark.last_id, "last_id": max((r["id"] for r in rows), default=mark.last_id)}
    return out.manifest


def gate(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """The feedback suite, row by row: failing rows are quarantined, the others go on to merge.

    A failure no row is to blame for (too few rows) holds the whole batch back: nothing merges and
    the watermark stays, so the next run exports these rows again.
    """
    import pandas as pd

    from lmchain.quality import publish
    from lmchain.quality.gate import validate

    exported = inputs["export"]
    batch = Path(exported["outputs"]["batch"])
    span = {"after_id": exported["info"]["after_id"], "last_id": exported["info"]["last_id"]}
    rows = list(read_jsonl(batch))
    if not rows:
        message = f"no new feedback after store id {span['after_id']}: nothing to validate or merge"
        print(f"[lmchain.gate] feedback: {message}", flush=True)
        with StageOutput(ctx, "feedback_gate", {}) as out:
            write_jsonl(out.output("batch", "accepted.jsonl"), [])
            out.manifest.counts = {"feedback_rows": 0, "passed_rows": 0, "quarantined_rows": 0}
            out.manifest.info = {"passed": True, "empty": True, "message": message, **span}
        return out.manifest
    names = list(cfg.annotate.label_names)
    if not names:
        # Taking them from the batch would let any correction pass, and print users' text in Data Docs.
        raise ConfigError("config key 'annotate.label_names' is empty: the feedback gate checks each correction "
                          "against the model's label names; set them in the recipe (e.g. [negative, positive])")
    result = validate(ctx.home, ctx.run_id, "feedback", pd.DataFrame(rows), [batch], cfg.gate.feedback, names,
                      hold="rows")
    counts = {"feedback_rows": len(rows)}
    if result.batch_failures:
        publish(ctx, "feedback_gate", cfg.gate, [result], {}, info={"held": "batch", **span})
        raise GateFailed(
            f"feedback gate held back run {ctx.run_id}'s batch of {len(rows)} rows: "
            + "; ".join(f"{c['expectation']} observed {c['observed']}" for c in result.batch_failures)
            + f". Nothing of it is merged and the watermark stays at store id {span['after_id']}, so the next "
              "run exports these rows again (with any newer ones); change gate.feedback.* if the threshold is wrong")
    held = set(result.row_failures)
    passed = [r for i, r in enumerate(rows) if i not in held]
    reasons = Counter(e for i in held for e in result.row_failures[i])
    counts.update(passed_rows=len(passed), quarantined_rows=len(held))
    info = {"passed": not held, "quarantined_rows": len(held), "quarantine_reasons": dict(reasons), **span}

    def write(out: StageOutput) -> None:
        write_jsonl(out.output("batch", "accepted.jsonl"), passed)
        out.manifest.counts.update(counts)

    manifest = publish(ctx, "feedback_gate", cfg.gate, [result], {}, info=info, write=write)
    if held:
        print(f"[lmchain.gate warning] feedback: {len(held)} of {len(rows)} rows quarantined in {result.quarantine} "
              f"({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}); the other {len(passed)} go on to "
              f"merge. Release them with `lmchain feedback release --run-id {ctx.run_id} --reason ...` "
              "(--drop ROW to leave some out)", flush=True)
    return manifest


def merge(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """Fold the rows the gate passed, and rows released from quarantine, into the feedback labels;
    then move the watermark. One critical section under the labels lock, so two runs on one home
    neither lose nor double each other's rows, and a rerun merges nothing twice."""
    from lmchain.feedback import quarantine
    from lmchain.locking import file_lock

    done = ctx.stage_dir("feedback_merge")
    if (done / "manifest.json").is_file():  # this run merged already (a retry or a cleared task)
        return Manifest.read(done)
    gated = inputs["gate"]
    batch = list(read_jsonl(gated["outputs"]["batch"]))
    target = labels_path(ctx.home)
    with file_lock(target):
        mark = Watermark.read(ctx.home)
        if mark.run_id == ctx.run_id and mark.counts is not None:
            counts = mark.counts  # merged and moved the watermark, then died before publishing
        else:
            fresh = [r for r in batch if not mark.covers(r["store_id"])]
            released = quarantine.pending(ctx.home)
            counts = _fold(target, fresh + [r for item in released for r in item.rows], ctx.run_id)
            counts.update(fresh=len(fresh), released=sum(len(item.rows) for item in released),
                          quarantined=int(gated["counts"].get("quarantined_rows", 0)))
            mark.add(int(gated["info"]["after_id"]), int(gated["info"]["last_id"]))
            mark.run_id, mark.counts = ctx.run_id, counts
            mark.write(ctx.home)  # only now: the labels hold every row up to it, or a quarantine does
            for item in released:
                quarantine.mark_merged(item, ctx.run_id)
    with StageOutput(ctx, "feedback_merge", {}) as out:
        out.manifest.outputs = {"labels": str(target)}
        out.manifest.counts = dict(counts)
        out.manifest.info = {"watermark": mark.last_id, "spans": mark.spans}
    return out.manifest


def _fold(target: Path, rows: list[dict[str, Any]], run_id: str) -> dict[str, int]:
    """Merge ``rows`` into labels.jsonl (one row per normalised text, the latest correction wins)."""
    merged: dict[str, dict[str, Any]] = {}
    if target.is_file():
        for row in read_jsonl(target):
            merged[normalise_for_dedup(row["text"])] = row
    new = changed = confirmations = superseded = 0
    for r in sorted(rows, key=lambda r: r["store_id"]):  # oldest first: the latest correction wins
        if r["predicted_label"] == r["correct_label"]:
            confirmations += 1  # a confirmation is a label too: keep it, it anchors the slice
        key = normalise_for_dedup(r["text"])
        row = {"text": normalize_text(r["text"]), "label": r["correct_label"], "provenance": "feedback",
               "feedback_id": r["feedback_id"], "request_id": r["request_id"], "model_version": r["version"],
               "created_at": r["created_at"], "run_id": run_id, "store_id": r["store_id"]}
        old = merged.get(key)
        if old is None:
            new += 1
        elif old.get("store_id", -1) > r["store_id"]:
            superseded += 1  # a released old row: a later correction of this text is already in
            continue
        elif old["label"] != row["label"]:
            changed += 1
        merged[key] = row
    if rows:
        # Rewrite atomically (the pipeline may read the file at any moment), under a name of its own.
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        write_jsonl(tmp, merged.values())
        tmp.replace(target)
    return {"batch": len(rows), "new_labels": new, "changed_labels": changed, "confirmations": confirmations,
            "superseded": superseded, "total_labels": len(merged)}


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
