"""The ``collect`` stage: local files, saved datasets and an HTTP crawl into JSONL text records with provenance.

Output ``records.jsonl``: one record (:class:`~lmchain.records.Document`) per document with
``id``, ``source``, ``url``, ``text``, ``fetched_at``, ``sha256`` (of the text) and ``meta`` (a
file's other columns, a page's title).
Crawled pages add ``title``, ``language``, ``status``, ``etag``, ``last_modified``, ``depth``,
``referrer``, ``html_sha256``, ``text_sha256`` (and ``html`` with ``collect.crawl.keep_html``).
Anything that could not be read or fetched becomes a line of ``rejects.jsonl`` with its reason.

A crawl is incremental: it emits only pages that are new or whose text changed since the last
crawl of the same seeds (see ``lmchain.collect.state``).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from lmchain.artifacts import Manifest, RunContext, StageOutput, now_iso, sha256_text
from lmchain.config import CollectConfig, CrawlConfig
from lmchain.home import Home
from lmchain.records import Document, Rejected

CONFIG = "collect"
READS: tuple[str, ...] = ()
ASSETS: tuple[str, ...] = ()
# Users' corrections (the feedback loop's labels file) join the sources.
READS_FEEDBACK_LABELS = True


def run(cfg: CollectConfig, ctx: RunContext, inputs: dict | None = None) -> Manifest:
    """The pipeline stage: output under the run folder; the crawl is keyed by the run id, so a
    retried task resumes the crawl (or reuses a finished one) instead of starting another."""
    with StageOutput(ctx, "collect", cfg.model_dump()) as out:
        _collect(cfg, out, run_key=ctx.run_id)
    return out.manifest


def collect_to(cfg: CollectConfig, folder: str | Path, home: Home | None = None) -> Manifest:
    """The CLI: output in ``folder`` (replaced whole when done). A crawl killed earlier resumes;
    otherwise a new, incremental crawl starts (its state under ``home``)."""
    ctx = RunContext("cli_collect", home=Home.of(home))
    out = StageOutput(ctx, "collect", cfg.model_dump())
    out.publish_to(Path(folder).resolve())
    with out:
        _collect(cfg, out, run_key=None)
    return out.manifest


class _Writer:
    """records.jsonl and rejects.jsonl, with the counts the manifest needs."""

    def __init__(self, out: StageOutput):
        self.rec_fh = open(out.output("records", "records.jsonl"), "w", encoding="utf-8")
        self.rej_fh = open(out.output("rejects", "rejects.jsonl"), "w", encoding="utf-8")
        self.per_source: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def keep(self, rec: Document) -> None:
        rec["sha256"] = sha256_text(rec["text"])
        rec["id"] = f"{rec['sha256'][:16]}-{self.per_source.total():08d}"
        self.rec_fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        self.per_source[rec["source"]] += 1

    def reject(self, rec: Document, reason: str) -> None:
        rejected: Rejected = {**rec, "reason": reason}
        self.rej_fh.write(json.dumps(rejected, ensure_ascii=False, default=str) + "\n")
        self.reasons[reason.split(":")[0]] += 1

    def close(self) -> None:
        self.rec_fh.close()
        self.rej_fh.close()


def _collect(cfg: CollectConfig, out: StageOutput, run_key: str | None) -> None:
    from lmchain.sources.files import resolve_files

    # Resolve every file before writing anything: a bad path fails fast, naming the file.
    files = [(src, resolve_files(src.path, src.format)) for src in cfg.files]
    window = _window(cfg)
    if window:
        outside = 0
        for i, (src, paths) in enumerate(files):
            if src.windowed:
                kept = [p for p in paths if window[0] < p.stat().st_mtime <= window[1]]
                outside += len(paths) - len(kept)
                files[i] = (src, kept)
        out.manifest.counts["files_outside_window"] = outside
        out.manifest.info["window"] = [cfg.modified_after, cfg.modified_before]
    writer = _Writer(out)
    try:
        for src, paths in files:
            _read_source(src, paths, writer)
        if cfg.crawl.seeds:
            _crawl(cfg.crawl, out.manifest, writer, run_key, out.ctx.home)
    finally:
        writer.close()
    m = out.manifest
    m.counts = {
        **m.counts,
        "records": writer.per_source.total(),
        "rejects": writer.reasons.total(),
        **{f"from_{k}": v for k, v in writer.per_source.items()},
    }
    m.drop_reasons = dict(writer.reasons)
    # Resolved paths (globs and ${SST2} expanded): lineage must reach the actual files.
    m.inputs = {
        f"files[{i}]": ",".join(str(p.resolve()) for p in paths) or src.path for i, (src, paths) in enumerate(files)
    }
    if cfg.crawl.seeds:
        m.inputs["crawl_seeds"] = ",".join(cfg.crawl.seeds)


def _window(cfg: CollectConfig) -> tuple[float, float] | None:
    """(after, before] as POSIX times, or None when the collection is not windowed."""
    if cfg.modified_after is None and cfg.modified_before is None:
        return None
    after = datetime.fromisoformat(cfg.modified_after).timestamp() if cfg.modified_after else float("-inf")
    before = datetime.fromisoformat(cfg.modified_before).timestamp() if cfg.modified_before else float("inf")
    return after, before


def _mtime_iso(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def _read_source(src, paths: list[Path], writer: _Writer) -> None:
    from lmchain.sources import hf
    from lmchain.sources.files import read_file

    if src.format != "auto":
        _read_span_source(src, paths, writer)
        return
    if src.path.startswith(hf.HUB_PREFIX):
        name = src.path[len(hf.HUB_PREFIX) :]
        units = [(f"{src.path}#{src.split}", now_iso(), hf.read_hub(name, src.text_field, src.split))]
    else:
        # A local file's stamp is its modification time, not the clock: a rerun of the same run
        # writes byte-identical records (the stage contract), and the stamp says which version was read.
        units = [
            (
                path.resolve().as_uri(),
                _mtime_iso(path),
                hf.read_saved(path, src.text_field, src.split) if path.is_dir() else read_file(path, src.text_field),
            )
            for path in paths
        ]
    taken = 0
    for uri, fetched_at, rows in units:
        for line, text, extra, bad in rows:
            if src.limit is not None and taken >= src.limit:
                break
            url = f"{uri}#L{line}"
            if bad:
                writer.reject(Document(source="file", url=url, fetched_at=fetched_at, meta=extra), bad)
                continue
            taken += 1
            writer.keep(Document(source="file", url=url, fetched_at=fetched_at, text=text, meta=extra))


# What a span reader puts beside a text that belongs on the record, not in its meta.
SPAN_FIELDS = ("entities", "annotations", "bio_repaired")


def _read_span_source(src, paths: list[Path], writer: _Writer) -> None:
    """Labelled text for task: ner (collect.files[].format conll, spans or label-studio): the spans
    go on the record (``entities`` or ``annotations``), and a bad row's reject keeps its text and
    spans as read, so that a person can see what was wrong with it."""
    from lmchain.errors import InputError
    from lmchain.sources import hf
    from lmchain.sources.spans import read_spans

    if src.path.startswith(hf.HUB_PREFIX) or any(p.is_dir() for p in paths):
        raise InputError(f"collect.files: format '{src.format}' reads local files; {src.path} is a dataset")
    taken = 0
    for path in paths:
        uri, fetched_at = path.resolve().as_uri(), _mtime_iso(path)
        for line, text, extra, bad in read_spans(path, src.format, src.text_field):
            if src.limit is not None and taken >= src.limit:
                break
            spans = {k: extra.pop(k) for k in SPAN_FIELDS if k in extra}
            rec = Document(source="file", url=f"{uri}#L{line}", fetched_at=fetched_at)
            if text is not None:
                rec["text"] = text
            if bad:
                writer.reject(Document(**rec, meta=extra, **spans), bad)  # type: ignore[typeddict-item]
                continue
            taken += 1
            writer.keep(Document(**rec, meta=extra, **spans))  # type: ignore[typeddict-item]


def _crawl(cfg: CrawlConfig, m: Manifest, writer: _Writer, run_key: str | None, home: Home) -> None:
    from lmchain.collect.crawler import crawl
    from lmchain.collect.state import DOC, DUPLICATE, FAILED, SKIPPED, CrawlStore, crawl_lock, state_path

    state = state_path(cfg, home)
    with crawl_lock(state, run_key):
        store = CrawlStore(state)
        try:
            stats = crawl(cfg, store, run_key)
            for kind, reason, rec in store.outcomes(stats.crawl_id, (DOC, FAILED, DUPLICATE, SKIPPED)):
                if kind == DOC:
                    writer.keep(rec)
                else:
                    writer.reject(rec, reason)
            summary = store.summary(stats.crawl_id)
        finally:
            store.close()
    kinds = summary["kinds"]
    m.counts.update(
        {
            "crawl_docs": kinds.get(DOC, 0),
            "crawl_failed": kinds.get(FAILED, 0),
            "crawl_unchanged": kinds.get("unchanged", 0),
            "crawl_duplicates": kinds.get(DUPLICATE, 0),
            "crawl_skipped": kinds.get(SKIPPED, 0),
            "crawl_queued_left": summary["queued_left"],
        }
    )
    m.info["crawl"] = {
        "crawl_id": stats.crawl_id,
        "state": stats.state,
        "state_path": str(state),
        "statuses": summary["statuses"],
        "failure_reasons": summary["reasons"],
        "fetched_this_process": stats.fetched,
        "seconds": round(stats.seconds, 3),
        "pages_per_s": round(stats.pages_per_s, 2),
        "sitemaps_read": stats.sitemaps_read,
    }
    m.metrics["crawl_pages_per_s"] = round(stats.pages_per_s, 2)
