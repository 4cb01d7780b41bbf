"""The ``annotate`` stage: human labels, semi-automatic labels, stable splits (the review queue
is the ``review_queue`` stage).

1. Import human labels (:mod:`lmchain.annotate.importers`: CSV/TSV/JSONL/Label Studio, label-name mapping), from the
   recipe's files, from users' feedback (precedence 1: a correction wins) and from review-queue
   files returned into ``annotate.active.returned_dir``.
2. Aggregate several votes per text (:mod:`lmchain.annotate.aggregate`): majority vote or Dawid-Skene; agreement
   (Fleiss' and Cohen's kappa) and conflicts are reported.
3. Join onto the gated corpus by normalised text, so the labelled set only holds texts that
   passed curation and the gate.
4. Modes semi/mixed: label unlabelled corpus texts with labelling functions and the champion's
   pre-labels (:mod:`lmchain.annotate.lfs`), combined by a label model or a weighted vote.
5. Split by a hash of the normalised text (:mod:`lmchain.annotate.splits`), check for leakage, and write the splits.

With ``task: ner`` (``annotate.entity_types`` set) the spans come with the corpus records instead
(:func:`run_ner`, :mod:`lmchain.annotate.spans`), and the same outputs hold NER examples.

Every example (:class:`~lmchain.records.Example`) carries ``provenance`` (human, feedback, rule, model,
rule+model) and ``confidence``.
Rows that cannot be used are kept in ``rejects.jsonl`` with their reason; conflicting votes are
listed in ``conflicts.jsonl`` (kept when a majority or the model resolves them, rejected on a tie).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator, cast

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, sha256_text, write_json, write_jsonl
from lmchain.config import AnnotateConfig
from lmchain.errors import InputError
from lmchain.records import Document, Example

CONFIG = "annotate"
READS = ("gate",)
ASSETS: tuple[str, ...] = ()
# Users' corrections (the feedback loop's labels file) are a label source (precedence 1).
READS_FEEDBACK_LABELS = True


def _weak_examples(
    cfg: AnnotateConfig, ctx: RunContext, names: list[str], pool: list[Document], gold: list[Example]
) -> tuple[list[Example], list[Example], dict]:
    """Semi-automatic labels for ``pool`` records -> (kept examples, every decision, info)."""
    from lmchain.annotate.champion import champion_predict
    from lmchain.annotate.lfs import build_lfs, provenance, weak_labels
    from lmchain.annotate.splits import unit

    weak = cfg.weak
    predict, info = champion_predict(ctx) if weak.champion else (None, {"champion": None, "reason": "off"})
    lfs = build_lfs(weak, names, predict)
    if not lfs:
        raise InputError(
            "annotate.mode is semi/mixed but no labelling function is set up and there is no "
            f"champion ({info.get('reason')}); configure annotate.weak (vader, keywords, regexes)"
        )
    if weak.max_items is not None and len(pool) > weak.max_items:
        pool = sorted(pool, key=lambda r: unit(r["text"], "weak"))[: weak.max_items]  # stable sample
    texts = [g["text"] for g in gold] + [r["text"] for r in pool]
    probs, votes, report = weak_labels(
        lfs, texts, len(names), weak.combine, {i: g["label"] for i, g in enumerate(gold)}
    )
    kept, decisions = [], []
    for j, rec in enumerate(pool):
        i = len(gold) + j
        label, conf = int(probs[i].argmax()), float(probs[i].max())
        ex = Example(
            id=rec["id"],
            text=rec["text"],
            label=label,
            label_name=names[label],
            source=rec.get("source", "unknown"),
            provenance=provenance(votes[i], lfs, label),
            confidence=round(conf, 4),
            votes={lf.name: names[v] for lf, v in zip(lfs, votes[i]) if v >= 0},
        )
        decisions.append(Example(**ex, kept=conf >= weak.min_confidence))
        if conf >= weak.min_confidence and ex["provenance"] != "prior":
            kept.append(ex)
    return (
        kept,
        decisions,
        {
            **info,
            "labelling_functions": report,
            "combine": weak.combine,
            "weak_pool": len(pool),
            "weak_kept": len(kept),
        },
    )


def run(cfg: AnnotateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    if cfg.entity_types:  # task: ner (the recipe's validation ties the two together)
        return run_ner(cfg, ctx, inputs)
    from lmchain.annotate.aggregate import aggregate_votes
    from lmchain.annotate.importers import label_sources, load_votes
    from lmchain.annotate.splits import check_leakage, split_of, stratified_split

    corpus = inputs["gate"]["outputs"]["records"]
    votes, rejects, names, label_files = load_votes(label_sources(cfg, ctx.home), list(cfg.label_names))
    labels, agg_rejects, conflicts, agreement = aggregate_votes(votes, names, cfg.aggregate)
    rejects += agg_rejects

    human: list[Example] = []
    unlabelled: list[Document] = []
    used: set[str] = set()
    for rec in read_jsonl(corpus):
        h = sha256_text(rec["text"])
        if h in labels and h not in used:
            used.add(h)
            _, label, conf, prov = labels[h]
            human.append(
                Example(
                    id=rec["id"],
                    text=rec["text"],
                    label=label,
                    label_name=names[label],
                    source=rec.get("source", "unknown"),
                    provenance=prov,
                    confidence=conf,
                )
            )
        elif h not in labels:
            unlabelled.append(Document(id=rec["id"], text=rec["text"], source=rec.get("source", "unknown")))
    for h, (text, label, _, _) in labels.items():
        if h not in used:
            rejects.append({"text": text, "label": names[label], "reason": "not_in_corpus"})

    weak: list[Example] = []  # as _weak_examples returns them: (kept examples, every decision, info)
    decisions: list[Example] = []
    weak_info: dict = {}
    if cfg.mode in ("semi", "mixed"):
        # Weak labels only for texts whose split is train: validation and test stay human-labelled,
        # and a text never changes split when a person labels it later.
        # Gold for the LFs' accuracies and the label model's anchors: validation texts only. Splits
        # are fixed by text, so no champion ever trained on them and its accuracy there is honest
        # (on its own training texts it looks near-perfect and would outvote every rule).
        gold = [e for e in human if split_of(e["text"], cfg) == "validation"]
        pool = [r for r in unlabelled if split_of(r["text"], cfg) == "train"]
        if cfg.mode == "semi":
            pool += [
                Document(id=e["id"], text=e["text"], source=e["source"])
                for e in human
                if split_of(e["text"], cfg) == "train"
            ]
        weak, decisions, weak_info = _weak_examples(cfg, ctx, names, pool, gold)
    examples = (human if cfg.mode != "semi" else [e for e in human if split_of(e["text"], cfg) != "train"]) + weak
    if len({e["label"] for e in examples}) < 2:
        raise InputError(
            f"annotate: only {len(examples)} labelled examples with "
            f"{len({e['label'] for e in examples})} class(es) matched the corpus {corpus}; "
            "a classifier needs at least two classes. Check annotate.labels and the collect sources"
        )
    splits = stratified_split(examples, cfg)
    check_leakage(splits)

    with StageOutput(ctx, "annotate", cfg.model_dump()) as out:
        # Resolved paths (globs and ${SST2} expanded): lineage must reach the actual files.
        out.manifest.inputs = {"corpus": corpus, **{f"labels[{i}]": p for i, p in enumerate(label_files)}}
        write_outputs(out, corpus, splits, rejects, conflicts, unlabelled, agreement, {"names": names})
        if decisions:
            write_jsonl(out.output("weak", "weak.jsonl"), decisions)
        out.manifest.counts = {
            **{s: len(v) for s, v in splits.items()},
            "rejects": len(rejects),
            "conflicts": len(conflicts),
            "human_labels": len(human),
            "weak_labels": len(weak),
            "unlabelled": len(unlabelled),
        }
        out.manifest.drop_reasons = dict(Counter(r["reason"].split(":")[0] for r in rejects))
        if decisions:
            out.manifest.drop_reasons["weak_below_confidence"] = sum(not d["kept"] for d in decisions)
        out.manifest.info = {
            "label_names": names,
            "mode": cfg.mode,
            "aggregate": cfg.aggregate,
            "agreement": agreement,
            "class_counts": dict(Counter(names[e["label"]] for e in splits["train"])),
            "provenance": {s: dict(Counter(e["provenance"] for e in v)) for s, v in splits.items()},
            **({"weak": weak_info} if weak_info else {}),
        }
    return out.manifest


def write_outputs(out, corpus, splits, rejects, conflicts, unlabelled, agreement, labels: dict) -> None:
    """The files every annotate run publishes, classification or NER, where later stages look."""
    for split, items in splits.items():
        write_jsonl(out.output(split, f"{split}.jsonl"), items)
    write_jsonl(out.output("rejects", "rejects.jsonl"), rejects)
    write_jsonl(out.output("conflicts", "conflicts.jsonl"), conflicts)
    write_jsonl(out.output("unlabelled", "unlabelled.jsonl"), unlabelled)
    write_json(out.output("agreement", "agreement.json"), agreement)
    write_json(out.output("labels", "labels.json"), labels)
    out.manifest.outputs["corpus"] = corpus


def run_ner(cfg: AnnotateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    """``task: ner``: the corpus's span-labelled records as NER splits (:mod:`lmchain.annotate.spans`).

    The same outputs as for classification, so the stages after it find them where they look:
    the splits hold :class:`~lmchain.records.NerExample` (``text``, ``entities``), split by a
    hash of the text as classification examples are; ``labels.json`` says ``task: ner``, the
    entity types (``names``) and the tag names (``tags``: O, B-/I- of each type)."""
    from lmchain.annotate.spans import ner_examples, tag_names, type_counts
    from lmchain.annotate.splits import check_leakage, stratified_split

    corpus = inputs["gate"]["outputs"]["records"]
    types = list(cfg.entity_types)
    records = cast(Iterator[Document], read_jsonl(corpus))  # the gated corpus: curate's records
    examples, unlabelled, rejects, conflicts, agreement = ner_examples(records, types)
    if not examples:
        raise InputError(
            f"annotate: no span-labelled record in the corpus {corpus} ({len(unlabelled)} unlabelled texts, "
            f"{len(rejects)} rejected); task: ner needs collect.files with format conll, spans or label-studio"
        )
    splits = stratified_split(examples, cfg)
    check_leakage(splits)
    with StageOutput(ctx, "annotate", cfg.model_dump()) as out:
        out.manifest.inputs = {"corpus": corpus}
        labels = {"task": "ner", "names": types, "tags": tag_names(types)}
        write_outputs(out, corpus, splits, rejects, conflicts, unlabelled, agreement, labels)
        out.manifest.counts = {
            **{s: len(v) for s, v in splits.items()},
            "rejects": len(rejects),
            "conflicts": len(conflicts),
            "human_labels": len(examples),
            "unlabelled": len(unlabelled),
            "entities": sum(len(e["entities"]) for e in examples),
        }
        out.manifest.drop_reasons = dict(Counter(r["reason"].split(":")[0] for r in rejects))
        out.manifest.info = {
            "task": "ner",
            "entity_types": types,
            "mode": cfg.mode,
            "agreement": agreement,
            "entity_counts": {s: type_counts(v) for s, v in splits.items()},
            "provenance": {s: dict(Counter(e.get("provenance", "human") for e in v)) for s, v in splits.items()},
        }
    return out.manifest
