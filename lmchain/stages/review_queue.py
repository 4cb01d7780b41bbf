"""The review_queue stage: the unlabelled texts worth a person's time, for the next labelling round.

Reads the annotate stage's ``unlabelled.jsonl`` (gated corpus texts without a human label),
scores a stable sample of them with the current champion (or, before there is one, with the
semi-automatic label model's probabilities from ``weak.jsonl``; failing both, picks at random),
selects ``annotate.active.k`` texts (``active.select``) and writes the queue as JSONL, CSV or
Label Studio import JSON. The queue is published under ``annotate.active.queue_dir``; files
people label and drop into ``annotate.active.returned_dir`` become human labels on the next
run, where their texts keep the split their hash gives them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, safe_run_id
from lmchain.config import AnnotateConfig
from lmchain.home import Home

CONFIG = "annotate"
READS = ("annotate",)
ASSETS: tuple[str, ...] = ()

EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "label-studio": "json"}


def queue_dir(cfg: AnnotateConfig, lm_home: Home | Path) -> Path:
    return Path(cfg.active.queue_dir) if cfg.active.queue_dir else Home.of(lm_home).annotation_queue


def _weak_probs(path: str | None, names: list[str]) -> dict:
    import numpy as np

    if not path or not Path(path).is_file():
        return {}
    out = {}
    for d in read_jsonl(path):
        p = np.full(len(names), (1 - d["confidence"]) / max(1, len(names) - 1))
        p[d["label"]] = d["confidence"]
        out[d["text"]] = p
    return out


def run(cfg: AnnotateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import json

    import numpy as np

    from lmchain.annotate.active import select, uncertainty, write_queue
    from lmchain.annotate.splits import unit

    act = cfg.active
    labelled = inputs["annotate"]["outputs"]
    label_info = json.loads(Path(labelled["labels"]).read_text())
    names = label_info["names"]
    # task: ner: ranking by token-level uncertainty comes with the NER champion; until then the
    # queue is a random (hash-ordered) sample, without suggestions.
    ner = label_info.get("task") == "ner"
    with StageOutput(ctx, "review_queue", act.model_dump()) as out:
        if not act.enabled:
            out.manifest.info = {"skipped": "annotate.active.enabled is false"}
            return out.manifest
        # A stable sample: the same texts are scored on every run until they get labelled.
        pool = sorted(read_jsonl(labelled["unlabelled"]), key=lambda r: unit(r["text"], "pool"))[: act.pool_limit]
        texts = [r["text"] for r in pool]
        probs, scorer, info = None, "random", {} if pool else {"reason": "no unlabelled texts in the corpus"}
        if ner and act.strategy != "random":
            info = {"reason": "task ner: token-level uncertainty is not there yet"}
        if act.strategy != "random" and pool and not ner:
            from lmchain.annotate.champion import champion_predict

            predict, info = champion_predict(ctx)
            if predict is not None:
                preds = predict(texts)
                probs, scorer = np.array([[p["scores"][n] for n in names] for p in preds]), info["champion"]
            else:  # before the first champion: the label model's probabilities (train-split texts only)
                weak = _weak_probs(labelled.get("weak"), names)
                if weak:
                    pool = [r for r in pool if r["text"] in weak]
                    texts = [r["text"] for r in pool]
                    probs, scorer = np.array([weak[t] for t in texts]).reshape(len(texts), len(names)), "label_model"
        strategy = act.strategy if probs is not None else "random"
        picked = select(probs, act.k, strategy, texts=texts, diversity=act.diversity, seed=cfg.seed)
        u = uncertainty(probs, strategy) if probs is not None else None
        items = []
        for i in picked:
            item = {"id": pool[i]["id"], "text": pool[i]["text"], "source": pool[i].get("source", "unknown")}
            if probs is not None and u is not None:  # u is there exactly when probs are
                item.update(
                    suggested_label=names[int(probs[i].argmax())],
                    confidence=round(float(probs[i].max()), 4),
                    uncertainty=round(float(u[i]), 4),
                    scorer=scorer,
                )
            items.append(item)
        ext = EXTENSIONS[act.format]
        path = write_queue(items, out.output("queue", f"queue.{ext}"), act.format, names)
        published = queue_dir(cfg, ctx.home) / f"{safe_run_id(ctx.run_id)}.{ext}"
        published.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, published)
        out.manifest.inputs = {"unlabelled": labelled["unlabelled"]}
        out.manifest.counts = {"pool": len(pool), "queue": len(items)}
        out.manifest.info = {
            "strategy": strategy,
            "scorer": scorer,
            "published": str(published),
            "format": act.format,
            **({"why_random": info.get("reason")} if scorer == "random" and act.strategy != "random" else {}),
            "mean_uncertainty": round(float(np.mean([u[i] for i in picked])), 4) if u is not None and picked else None,
        }
    return out.manifest
