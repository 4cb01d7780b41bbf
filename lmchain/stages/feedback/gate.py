"""The feedback ``gate`` task: the GX ``feedback`` suite (label set, PII, language, ...), row by
row. Failing rows go to ``<home>/quarantine/<run_id>/feedback/rows.jsonl`` (operator-only)
with the expectations they failed; the others go on. ``lmchain feedback release`` lets a person
release held rows (with a reason, dropping some); they merge in the next run. A failure no row
is to blame for (too few rows) holds the batch back (``status: blocked``): it is exported again
next time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lmchain.artifacts import BLOCKED, Manifest, RunContext, StageOutput, read_jsonl, write_jsonl
from lmchain.config import PipelineConfig
from lmchain.errors import ConfigError, GateFailed

CONFIG = None  # the whole recipe: annotate.label_names and gate.feedback
READS = ("export",)
ASSETS: tuple[str, ...] = ()


def run(cfg: PipelineConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """The feedback suite, row by row: failing rows are quarantined, the others go on to merge.

    A failure no row is to blame for (too few rows) holds the whole batch back: nothing merges and
    the watermark stays, so the next run exports these rows again.
    """
    import pandas as pd

    from lmchain.quality.checks import publish
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
        raise ConfigError(
            "config key 'annotate.label_names' is empty: the feedback gate checks each correction "
            "against the model's label names; set them in the recipe (e.g. [negative, positive])"
        )
    result = validate(
        ctx.home, ctx.run_id, "feedback", pd.DataFrame(rows), [batch], cfg.gate.feedback, names, hold="rows"
    )
    counts = {"feedback_rows": len(rows)}
    if result.batch_failures:
        publish(ctx, "feedback_gate", cfg.gate, [result], {}, info={"held": "batch", **span}, status=BLOCKED)
        raise GateFailed(
            f"feedback gate held back run {ctx.run_id}'s batch of {len(rows)} rows: "
            + "; ".join(f"{c['expectation']} observed {c['observed']}" for c in result.batch_failures)
            + f". Nothing of it is merged and the watermark stays at store id {span['after_id']}, so the next "
            "run exports these rows again (with any newer ones); change gate.feedback.* if the threshold is wrong"
        )
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
        print(
            f"[lmchain.gate warning] feedback: {len(held)} of {len(rows)} rows quarantined in {result.quarantine} "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}); the other {len(passed)} go on to "
            f"merge. Release them with `lmchain feedback release --run-id {ctx.run_id} --reason ...` "
            "(--drop ROW to leave some out)",
            flush=True,
        )
    return manifest
