"""The curation pipeline: steps built from CurateConfig, run on all cores in chunks.

Document steps (normalise, length, language, quality filters, PII, decontamination) and the
hashing that dedup needs run in worker processes, a chunk of records at a time. The main process
reads the input, hands out chunks (a bounded number in flight, so memory does not grow with
the input), takes the results back in input order, decides duplicates and writes the output.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Iterable, Iterator

import numpy as np

from lmchain.artifacts import sha256_text
from lmchain.config import CurateConfig
from lmchain.curate.dedup import Decontaminator
from lmchain.curate.filters import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from lmchain.curate.langid import LanguageFilter
from lmchain.curate.minhash import MinHasher
from lmchain.curate.pii import PiiRedactor
from lmchain.curate.spans import follow, has_spans, snapshot
from lmchain.curate.steps import LengthFilter, Normalize
from lmchain.records import Document, Rejected

log = logging.getLogger(__name__)


def build_steps(cfg: CurateConfig, eval_texts: list[str] | None = None) -> list:
    """The per-document steps, in the order they run. Cheap, text-changing steps come first,
    filters next (cheapest first where that changes no decision), PII redaction last so that
    the filters judge the text as written."""
    steps: list = []
    if cfg.normalize or cfg.boilerplate:
        steps.append(Normalize(normalize=cfg.normalize, boilerplate=cfg.boilerplate))
    steps.append(LengthFilter(cfg.min_chars, cfg.max_chars, cfg.min_words))
    if cfg.language.enabled:
        lang = cfg.language
        steps.append(
            LanguageFilter(lang.allow, lang.min_score, lang.min_words, lang.model_path or None, lang.min_margin)
        )
    if cfg.gopher_repetition.enabled:
        steps.append(GopherRepetition(cfg.gopher_repetition))
    if cfg.gopher_quality.enabled:
        steps.append(GopherQuality(cfg.gopher_quality))
    if cfg.c4.enabled:
        steps.append(C4Quality(cfg.c4))
    if cfg.fineweb.enabled:
        steps.append(FineWebQuality(cfg.fineweb))
    if cfg.pii.enabled:
        steps.append(PiiRedactor(list(cfg.pii.kinds), {p.name: p.regex for p in cfg.pii.patterns}))
    if eval_texts:
        steps.append(Decontaminator(eval_texts, cfg.decontaminate.ngram))
    return steps


@dataclass
class ChunkResult:
    """A chunk after the document steps: per record, its output form and the reason if dropped."""

    records: list[Document | Rejected]  # in input order, each kept (cleaned) or rejected (as read)
    reasons: list[str | None]
    exact_keys: list[int]  # of survivors, in order
    band_keys: np.ndarray | None  # (survivors, bands)
    signatures: np.ndarray | None  # (survivors, bands * rows) MinHash values


class ChunkWorker:
    """Runs in a worker process: the steps, then the keys dedup needs."""

    def __init__(self, cfg: CurateConfig, eval_texts: list[str]):
        self.steps = build_steps(cfg, eval_texts)
        near = cfg.near_dedup
        self.minhasher = MinHasher(near.ngram, near.bands, near.rows, near.seed) if near.enabled else None

    def __call__(self, chunk: list[Document]) -> ChunkResult:
        out: list[Document | Rejected] = []
        reasons: list[str | None] = []
        survivors: list[Document] = []
        for rec in chunk:
            original = rec["text"]
            reason = None
            spans = snapshot(rec) if has_spans(rec) else None  # task: ner
            for step in self.steps:
                before = rec["text"]
                reason = step(rec)
                if not reason and spans is not None and rec["text"] != before:
                    reason = follow(rec, before, step)  # the entities move with the text, or the record goes
                if reason:
                    break
            if reason:
                rejected: Rejected = {**rec, "text": original, **(spans or {}), "reason": reason}  # type: ignore[typeddict-item]
                out.append(rejected)
            else:
                rec["sha256"] = sha256_text(rec["text"])
                if rec["text"] != original:
                    rec["_original"] = original  # a duplicate's reject shows the text as collected
                    if spans is not None:
                        rec["_original_spans"] = spans  # ...and its spans as collected
                out.append(rec)
                survivors.append(rec)
            reasons.append(reason)
        exact = [int(r["sha256"][:16], 16) for r in survivors]
        sigs = bands = None
        if self.minhasher and survivors:
            sigs = self.minhasher.signatures([r["text"] for r in survivors])
            bands = self.minhasher.band_keys(sigs)
        return ChunkResult(out, reasons, exact, bands, sigs)


_worker: ChunkWorker | None = None


def _init_worker(cfg: CurateConfig, eval_texts: list[str]) -> None:
    global _worker
    _worker = ChunkWorker(cfg, eval_texts)


def _run_chunk(chunk: list[Document]) -> ChunkResult:
    assert _worker is not None, "the pool runs _init_worker in each process before any chunk"
    return _worker(chunk)


def _chunks(records: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def worker_count(cfg: CurateConfig) -> int:
    if cfg.workers:
        return cfg.workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_chunks(cfg: CurateConfig, records: Iterable[Document], eval_texts: list[str]) -> Iterator[ChunkResult]:
    """ChunkResults in input order, computed by ``workers`` processes with at most two chunks per
    worker in flight."""
    workers = worker_count(cfg)
    chunks = _chunks(records, cfg.chunk_size)
    first = list(islice(chunks, 2))
    chunks = chain(first, chunks)
    if workers <= 1 or len(first) < 2:  # one chunk: starting processes would cost more than it saves
        worker = ChunkWorker(cfg, eval_texts)
        yield from map(worker, chunks)
        return
    # spawn, not fork: Airflow's task process has threads, and forking a threaded process can
    # deadlock the child on a lock some thread held.
    ctx = multiprocessing.get_context("spawn")
    pending: list[tuple[list[Document], Any]] = []
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, eval_texts)) as pool:

            def submit(chunk: list[Document]) -> None:
                pending.append((chunk, None))  # listed before submit, which can raise
                pending[-1] = (chunk, pool.submit(_run_chunk, chunk))

            for chunk in islice(chunks, 2 * workers):
                submit(chunk)
            while pending:
                result = pending[0][1].result()
                pending.pop(0)
                nxt = next(chunks, None)
                if nxt is not None:
                    submit(nxt)
                yield result
    except BrokenProcessPool as exc:
        # Seen under Airflow's LocalExecutor, whose task processes' workers die at start-up:
        # finish in this process (same results, in order) rather than fail the run.
        log.warning("curate: worker processes died (%s); continuing in this process", exc)
        worker = ChunkWorker(cfg, eval_texts)
        yield from map(worker, chain((c for c, _ in pending), chunks))


class Progress:
    """A log line every ``every_s`` seconds: documents read, kept, rate."""

    def __init__(self, every_s: float = 10.0):
        self.t0 = self.last = time.perf_counter()
        self.every_s = every_s

    def update(self, seen: int, kept: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every_s:
            self.last = now
            rate = seen / max(now - self.t0, 1e-9)
            log.info("curate: %d documents, %d kept (%.1f%%), %.0f docs/s", seen, kept, 100 * kept / max(seen, 1), rate)


def pii_counts(records: list[Document]) -> Counter:
    found: Counter[str] = Counter()
    for rec in records:
        found.update(rec.get("pii", {}))
    return found
