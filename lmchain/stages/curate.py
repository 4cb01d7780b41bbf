"""The ``curate`` stage: normalise, identify the language, filter for quality, redact PII, decontaminate and
drop exact and near duplicates (also of what earlier runs kept).

Output ``records.jsonl`` (kept records, text cleaned) and ``rejects.jsonl`` (every dropped
record, whole and as collected, with ``reason`` and, for duplicates, ``duplicate_of``); the
manifest counts drops per reason and PII redactions per kind. The steps are in
:mod:`lmchain.curate.pipeline`; which apply, and their thresholds, is CurateConfig.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, cast

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl
from lmchain.config import CurateConfig
from lmchain.errors import InputError
from lmchain.home import Home
from lmchain.records import Document, Rejected

CONFIG = "curate"
READS = ("collect",)
ASSETS: tuple[str, ...] = ()


def run(cfg: CurateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """The pipeline stage: the collect stage's records in, ``<run>/curate/`` out."""
    source = inputs["collect"]["outputs"]["records"]
    with StageOutput(ctx, "curate", cfg.model_dump()) as out:
        _curate(cfg, source, out, ctx.home, ctx.run_id)
    return out.manifest


def curate_to(cfg: CurateConfig, source: str | Path, folder: str | Path, home: Home | None = None) -> Manifest:
    """The CLI: records from ``source`` (a records.jsonl, or a folder holding one) into ``folder``
    (replaced whole when done)."""
    path = Path(source)
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.is_file():
        raise InputError(f"curate: no records at {path}; pass a records.jsonl or the folder collect wrote")
    ctx = RunContext("cli_curate", home=Home.of(home))
    out = StageOutput(ctx, "curate", cfg.model_dump())
    out.publish_to(Path(folder).resolve())
    with out:
        _curate(cfg, str(path), out, ctx.home, f"cli-{out.final.name}")
    return out.manifest


def minhash_signature(cfg: CurateConfig) -> str:
    """What a stored index depends on: keys made with other settings never match."""
    n = cfg.near_dedup
    return f"minhash-v1 ngram={n.ngram} bands={n.bands} rows={n.rows} seed={n.seed} near={n.enabled}"


def _history_run_key(run_id: str) -> str:
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def _eval_texts(cfg: CurateConfig) -> list[str]:
    from lmchain.sources.files import read_file, resolve_files

    texts: list[str] = []
    for path_glob in cfg.decontaminate.paths:
        for path in resolve_files(path_glob):
            # a record without a reject reason has its text
            texts.extend(
                text
                for _, text, _, bad in read_file(path, cfg.decontaminate.text_field)
                if not bad and text is not None
            )
    return texts


def _curate(cfg: CurateConfig, source: str, out: StageOutput, home: Home, run_id: str) -> None:
    from lmchain.curate.dedup import Deduper
    from lmchain.curate.pipeline import Progress, map_chunks, pii_counts, worker_count

    t0 = time.perf_counter()
    near = cfg.near_dedup
    deduper = Deduper(cfg.dedup, near.enabled, near.bands, near.bands * near.rows, near.threshold)
    history_dir = home.curate_index / cfg.history if cfg.history else None
    run_key = _history_run_key(run_id)
    history_docs = deduper.load_history(history_dir, run_key, minhash_signature(cfg)) if history_dir else 0
    eval_texts = _eval_texts(cfg)
    reasons: Counter[str] = Counter()
    pii: Counter[str] = Counter()
    kept_ids: dict[int, str] = {}  # ordinal -> id of kept records: the duplicate_of of a reject
    seen = kept = 0
    progress = Progress()
    out.manifest.inputs = {"records": source}
    with (
        open(out.output("records", "records.jsonl"), "w", encoding="utf-8") as keep_fh,
        open(out.output("rejects", "rejects.jsonl"), "w", encoding="utf-8") as rej_fh,
    ):
        documents = cast(Iterator[Document], read_jsonl(source))  # collect's records.jsonl
        for result in map_chunks(cfg, documents, eval_texts):
            survivors = [i for i, r in enumerate(result.reasons) if r is None]
            ordinals = [seen + i for i in survivors]
            verdicts = deduper.check(result.exact_keys, result.band_keys, ordinals, result.signatures)
            for i, verdict in zip(survivors, verdicts):
                if verdict is None:
                    kept_ids[seen + i] = str(result.records[i].get("id", seen + i))
            for i, verdict in zip(survivors, verdicts):
                if verdict is not None:
                    dup_reason, owner = verdict
                    rec = result.records[i]
                    result.reasons[i] = dup_reason
                    rejected: Rejected = {
                        **rec,
                        "text": rec.pop("_original", rec["text"]),
                        **rec.pop("_original_spans", {}),  # type: ignore[typeddict-item]  # ner: spans as collected
                        "reason": dup_reason,
                        "duplicate_of": "earlier run" if owner < 0 else kept_ids[owner],
                    }
                    result.records[i] = rejected
            for i, (rec, reason) in enumerate(zip(result.records, result.reasons)):
                rec.pop("_original", None)
                rec.pop("_original_spans", None)
                if reason:
                    reasons[reason] += 1
                    rej_fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                else:
                    kept += 1
                    keep_fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
            pii.update(pii_counts([r for r, why in zip(result.records, result.reasons) if not why]))
            seen += len(result.records)
            progress.update(seen, kept)
    progress.update(seen, kept, force=True)
    if history_dir:
        deduper.save_history(history_dir, run_key, minhash_signature(cfg))
    elapsed = time.perf_counter() - t0
    out.manifest.counts = {
        "input": seen,
        "records": kept,
        "rejects": reasons.total(),
        **{f"pii_{kind}": n for kind, n in sorted(pii.items())},
    }
    out.manifest.drop_reasons = dict(reasons)
    out.manifest.metrics = {"docs_per_second": round(seen / max(elapsed, 1e-9), 1)}
    out.manifest.info = {
        "workers": worker_count(cfg),
        "history": {"index": str(history_dir), "documents_before": history_docs} if history_dir else None,
        "eval_texts": len(eval_texts),
    }
