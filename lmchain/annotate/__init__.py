"""Annotate: import labels from files, join them onto the gated corpus, split stratified.

Labels are matched to corpus records by their normalised text, so the labelled set only holds
texts that passed curation and the gate. Labelled rows that cannot be used are kept in
``rejects.jsonl`` with a reason: not in the corpus, an unknown label, or conflicting labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter, defaultdict

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, sha256_text, write_json, write_jsonl
from lmchain.collect.files import read_file, resolve_files
from lmchain.config import AnnotateConfig, FileSource
from lmchain.curate.steps import normalise_for_dedup, normalize_text
from lmchain.errors import InputError

SPLITS = ("train", "validation", "test")


def _label_id(raw: str, names: list[str]) -> int | None:
    raw = raw.strip()
    if raw in names:
        return names.index(raw)
    if raw.lstrip("-").isdigit() and 0 <= int(raw) < len(names):
        return int(raw)
    return None


def load_labels(cfg: AnnotateConfig) -> tuple[dict[str, tuple[str, str]], list[dict], list[str], list[str]]:
    """Read label files -> ({text hash: (text, raw label)}, rejects, label names, files read)."""
    rows: list[tuple[str, str, str, int]] = []  # (text, raw label, provenance, precedence)
    rejects: list[dict] = []
    read: list[str] = []
    for src in cfg.labels:
        fs = FileSource(path=src.path, text_field=src.text_field, limit=src.limit)
        for path in resolve_files(fs):
            read.append(str(path.resolve()))
            taken = 0
            for line, text, extra, bad in read_file(path, src.text_field):
                where = f"{path}#L{line}"
                if bad:
                    rejects.append({"where": where, "reason": bad, **extra})
                    continue
                if src.label_field not in extra:
                    raise InputError(f"annotate.labels: {path} has no label column '{src.label_field}'; "
                                     "set label_field to the column that holds the label")
                if src.limit is not None and taken >= src.limit:
                    break
                taken += 1
                rows.append((normalize_text(text), str(extra[src.label_field]), where, src.precedence))
    names = list(cfg.label_names) or sorted({r[1].strip() for r in rows})
    by_hash: dict[str, tuple[str, str]] = {}
    rank: dict[str, int] = {}
    conflicts: set[str] = set()
    for text, raw, where, precedence in rows:
        h = sha256_text(text)
        if h not in by_hash or precedence > rank[h]:
            by_hash[h], rank[h] = (text, raw), precedence  # a correction replaces the original label
            conflicts.discard(h)
        elif precedence == rank[h] and by_hash[h][1] != raw:
            conflicts.add(h)
    for h in conflicts:
        text, raw = by_hash.pop(h)
        rejects.append({"text": text, "label": raw, "reason": "conflicting_labels"})
    return by_hash, rejects, names, read


def _unit(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by the text alone: the same on every run, whatever else is in the data."""
    return int(hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()[:13], 16) / 16 ** 13


def stratified_split(examples: list[dict], cfg: AnnotateConfig) -> dict[str, list[dict]]:
    """Split by a hash of each sentence, so a sentence keeps its split in every run.

    Texts that are the same sentence up to case and punctuation form one group and share a
    split. The split depends on the text alone, not on the rest of the data, so when feedback
    or a nightly collection adds examples, nothing the champion trained on moves into the test
    split its challenger is scored on. (A shuffled quota re-deals every split when the data
    changes: the feedback-loop bench saw the champion "win" on sentences it had trained on.)
    Class shares hold in expectation rather than exactly; ``max_examples`` subsamples each label
    in proportion, by another hash, so the choice is stable too.
    """
    rng = random.Random(cfg.seed)
    groups: dict[str, list[dict]] = defaultdict(list)
    for ex in sorted(examples, key=lambda e: e["id"]):
        groups[normalise_for_dedup(ex["text"])].append(ex)
    keys = sorted(groups)
    if cfg.max_examples is not None and len(examples) > cfg.max_examples:
        share = cfg.max_examples / len(examples)
        by_label: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            by_label[groups[key][0]["label"]].append(key)
        keys = sorted(k for label_keys in by_label.values()
                      for k in sorted(label_keys, key=lambda k: _unit(k, f"sample{cfg.seed}"))
                      [: max(1, round(len(label_keys) * share))])
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for key in keys:
        u = _unit(key, f"split{cfg.seed}")
        split = ("test" if u < cfg.test_fraction else
                 "validation" if u < cfg.test_fraction + cfg.validation_fraction else "train")
        splits[split] += groups[key]
    for items in splits.values():
        rng.shuffle(items)  # training order; membership is fixed above
    return splits


def run(cfg: AnnotateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    corpus = inputs["gate"]["outputs"]["records"]
    labels, rejects, names, label_files = load_labels(cfg)
    examples, used = [], set()
    for rec in read_jsonl(corpus):
        h = sha256_text(rec["text"])
        if h in labels and h not in used:
            used.add(h)
            text, raw = labels[h]
            label = _label_id(raw, names)
            if label is None:
                rejects.append({"text": text, "label": raw, "reason": "unknown_label"})
                continue
            examples.append({"id": rec["id"], "text": rec["text"], "label": label, "label_name": names[label],
                             "source": rec.get("source", "unknown")})
    for h, (text, raw) in labels.items():
        if h not in used:
            rejects.append({"text": text, "label": raw, "reason": "not_in_corpus"})
    if len({e["label"] for e in examples}) < 2:
        raise InputError(f"annotate: only {len(examples)} labelled examples with "
                         f"{len({e['label'] for e in examples})} class(es) matched the corpus {corpus}; "
                         "a classifier needs at least two classes. Check annotate.labels and the collect sources")
    splits = stratified_split(examples, cfg)

    with StageOutput(ctx, "annotate", dataclasses.asdict(cfg)) as out:
        # Resolved paths (globs and ${SST2} expanded): lineage must reach the actual files.
        out.manifest.inputs = {"corpus": corpus, **{f"labels[{i}]": p for i, p in enumerate(label_files)}}
        for split, items in splits.items():
            write_jsonl(out.output(split, f"{split}.jsonl"), items)
        write_jsonl(out.output("rejects", "rejects.jsonl"), rejects)
        write_json(out.output("labels", "labels.json"), {"names": names})
        out.manifest.outputs["corpus"] = corpus
        out.manifest.counts = {**{s: len(v) for s, v in splits.items()}, "rejects": len(rejects)}
        out.manifest.drop_reasons = dict(Counter(r["reason"].split(":")[0] for r in rejects))
        out.manifest.info = {"label_names": names,
                             "class_counts": dict(Counter(names[e["label"]] for e in splits["train"]))}
    return out.manifest
