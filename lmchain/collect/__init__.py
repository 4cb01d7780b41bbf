"""Collect: local files and an HTTP crawl into JSONL text records with provenance.

Output ``records.jsonl``: one record per document with ``id``, ``source``, ``url``, ``text``,
``fetched_at``, ``sha256`` and the file's other columns in ``meta``. Anything that could not be
read becomes a line of ``rejects.jsonl`` with its reason.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

from lmchain.artifacts import Manifest, RunContext, StageOutput, now_iso, sha256_text
from lmchain.config import CollectConfig
from lmchain.collect.crawl import crawl
from lmchain.collect.files import read_file, resolve_files


def run(cfg: CollectConfig, ctx: RunContext, inputs: dict | None = None) -> Manifest:
    # Resolve every file before writing anything: a bad path fails fast, naming the file.
    files = [(src, resolve_files(src)) for src in cfg.files]
    reasons: Counter[str] = Counter()
    per_source: Counter[str] = Counter()
    with StageOutput(ctx, "collect", dataclasses.asdict(cfg)) as out:
        with open(out.output("records", "records.jsonl"), "w", encoding="utf-8") as rec_fh, \
                open(out.output("rejects", "rejects.jsonl"), "w", encoding="utf-8") as rej_fh:

            def keep(rec: dict) -> None:
                rec["sha256"] = sha256_text(rec["text"])
                rec["id"] = f"{rec['sha256'][:16]}-{per_source.total():08d}"
                rec_fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                per_source[rec["source"]] += 1

            def reject(rec: dict, reason: str) -> None:
                rej_fh.write(json.dumps({**rec, "reason": reason}, ensure_ascii=False) + "\n")
                reasons[reason.split(":")[0]] += 1

            for src, paths in files:
                taken = 0
                for path in paths:
                    fetched_at = now_iso()
                    for line, text, extra, bad in read_file(path, src.text_field):
                        if src.limit is not None and taken >= src.limit:
                            break
                        base = {"source": "file", "url": f"file://{path.resolve()}#L{line}",
                                "fetched_at": fetched_at}
                        if bad:
                            reject({**base, "meta": extra}, bad)
                            continue
                        taken += 1
                        keep({**base, "text": text, "meta": extra})

            for page in crawl(cfg.crawl_seeds, cfg.crawl_max_pages, cfg.crawl_timeout_s,
                              cfg.crawl_delay_s, cfg.user_agent):
                base = {"source": "web", "url": page.url, "fetched_at": now_iso(), "status": page.status}
                if page.error:
                    reject(base, page.error)
                else:
                    keep({**base, "text": page.text, "meta": {"title": page.title}})

        out.manifest.counts = {"records": per_source.total(), "rejects": reasons.total(),
                               **{f"from_{k}": v for k, v in per_source.items()}}
        out.manifest.drop_reasons = dict(reasons)
        # Resolved paths (globs and ${SST2} expanded): lineage must reach the actual files.
        out.manifest.inputs = {f"files[{i}]": ",".join(str(p.resolve()) for p in paths)
                               for i, (src, paths) in enumerate(files)}
        if cfg.crawl_seeds:
            out.manifest.inputs["crawl_seeds"] = ",".join(cfg.crawl_seeds)
    return out.manifest
