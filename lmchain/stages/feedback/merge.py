"""The feedback ``merge`` task: corrected labels go into ``<home>/feedback/labels.jsonl``,
one row per normalised text (the latest correction wins), with provenance ``feedback``. Then,
and only then, the watermark moves past the batch: every row up to it is in the labels or held
in a quarantine. Labels, watermark and release records change under one file lock."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, write_jsonl
from lmchain.config import PipelineConfig

CONFIG = None  # the whole recipe
READS = ("gate",)
ASSETS: tuple[str, ...] = ()


def run(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """Fold the rows the gate passed, and rows released from quarantine, into the feedback labels;
    then move the watermark. One critical section under the labels lock, so two runs on one home
    neither lose nor double each other's rows, and a rerun merges nothing twice."""
    from lmchain.feedback import quarantine
    from lmchain.feedback.watermark import Watermark
    from lmchain.locking import file_lock

    done = ctx.stage_dir("feedback_merge")
    if (done / "manifest.json").is_file():  # this run merged already (a retry or a cleared task)
        return Manifest.read(done)
    gated = inputs["gate"]
    batch = list(read_jsonl(gated["outputs"]["batch"]))
    target = ctx.home.feedback_labels
    with file_lock(target):
        mark = Watermark.read(ctx.home)
        if mark.run_id == ctx.run_id and mark.counts is not None:
            counts = mark.counts  # merged and moved the watermark, then died before publishing
        else:
            fresh = [r for r in batch if not mark.covers(r["store_id"])]
            released = quarantine.pending(ctx.home)
            counts = _fold(target, fresh + [r for item in released for r in item.rows], ctx.run_id)
            counts.update(
                fresh=len(fresh),
                released=sum(len(item.rows) for item in released),
                quarantined=int(gated["counts"].get("quarantined_rows", 0)),
            )
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
    from lmchain.text import normalise_for_dedup, normalize_text

    merged: dict[str, dict[str, Any]] = {}
    if target.is_file():
        for row in read_jsonl(target):
            merged[normalise_for_dedup(row["text"])] = row
    new = changed = confirmations = superseded = 0
    for r in sorted(rows, key=lambda r: r["store_id"]):  # oldest first: the latest correction wins
        if r["predicted_label"] == r["correct_label"]:
            confirmations += 1  # a confirmation is a label too: keep it, it anchors the slice
        key = normalise_for_dedup(r["text"])
        row = {
            "text": normalize_text(r["text"]),
            "label": r["correct_label"],
            "provenance": "feedback",
            "feedback_id": r["feedback_id"],
            "request_id": r["request_id"],
            "model_version": r["version"],
            "created_at": r["created_at"],
            "run_id": run_id,
            "store_id": r["store_id"],
        }
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
    return {
        "batch": len(rows),
        "new_labels": new,
        "changed_labels": changed,
        "confirmations": confirmations,
        "superseded": superseded,
        "total_labels": len(merged),
    }
