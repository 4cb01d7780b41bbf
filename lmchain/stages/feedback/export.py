"""The feedback ``export`` task: the feedback records the watermark does not cover yet (store ids)
to ``batch.jsonl``. It only reads the watermark (merge moves it); a rerun of the same DAG run
reuses its batch."""

from __future__ import annotations

import os

from lmchain.artifacts import Manifest, RunContext, StageOutput, write_jsonl
from lmchain.config import PipelineConfig

CONFIG = None  # the whole recipe
READS: tuple[str, ...] = ()
ASSETS: tuple[str, ...] = ()


def _store_url(cfg: PipelineConfig, home) -> str:
    from lmchain.serve.store import default_url

    return cfg.deploy.service.store_url or default_url(home)


def run(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """The feedback not accounted for yet. Reads the watermark, never moves it (merge does)."""
    from lmchain.feedback.watermark import Watermark
    from lmchain.serve.store import ServingStore

    done = ctx.stage_dir("feedback_export")
    if (done / "manifest.json").is_file():  # a retried or re-run task: the same batch again
        return Manifest.read(done)
    mark = Watermark.read(ctx.home)
    store = ServingStore(_store_url(cfg, ctx.home), spill_path=ctx.home.spill_file)
    try:
        rows = [r for r in store.feedback_since(mark.last_id) if not mark.covers(r["id"])]
    finally:
        store.close()
    with StageOutput(ctx, "feedback_export", {"after_id": mark.last_id}) as out:
        path = out.output("batch", "batch.jsonl")
        write_jsonl(
            path,
            [
                {
                    "text": r["text"],
                    "predicted_label": r["predicted_label"],
                    "correct_label": r["correct_label"],
                    "feedback_id": r["feedback_id"],
                    "request_id": r["request_id"],
                    "created_at": r["created_at"],
                    "model": r["model"],
                    "version": r["version"],
                    "store_id": r["id"],
                }
                for r in rows
            ],
        )
        os.chmod(path, 0o600)  # users' raw texts, PII included until the gate has looked: operator-only
        out.manifest.counts = {"records": len(rows)}
        out.manifest.info = {"after_id": mark.last_id, "last_id": max((r["id"] for r in rows), default=mark.last_id)}
    return out.manifest
