"""Curate: normalise, filter by length and drop exact duplicates.

Output ``records.jsonl`` (kept records, text normalised) and ``rejects.jsonl`` (every dropped
record, whole, with ``reason``); the manifest counts drops per reason.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl
from lmchain.config import CurateConfig
from lmchain.curate.steps import ExactDedup, LengthFilter, Normalize


def build_steps(cfg: CurateConfig) -> list:
    steps: list = [Normalize()] if cfg.normalize else []
    steps.append(LengthFilter(cfg.min_chars, cfg.max_chars, cfg.min_words))
    if cfg.dedup:
        steps.append(ExactDedup())
    return steps


def run(cfg: CurateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    source = inputs["collect"]["outputs"]["records"]
    steps = build_steps(cfg)
    reasons: Counter[str] = Counter()
    kept = seen = 0
    with StageOutput(ctx, "curate", dataclasses.asdict(cfg)) as out:
        out.manifest.inputs = {"records": source}
        with open(out.output("records", "records.jsonl"), "w", encoding="utf-8") as keep_fh, \
                open(out.output("rejects", "rejects.jsonl"), "w", encoding="utf-8") as rej_fh:
            for rec in read_jsonl(source):
                seen += 1
                original = rec["text"]
                reason = next((r for step in steps if (r := step(rec))), None)
                if reason:
                    reasons[reason] += 1
                    rej_fh.write(json.dumps({**rec, "text": original, "reason": reason}, ensure_ascii=False) + "\n")
                else:
                    kept += 1
                    keep_fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        out.manifest.counts = {"input": seen, "records": kept, "rejects": reasons.total()}
        out.manifest.drop_reasons = dict(reasons)
    return out.manifest
