"""``task: ner`` in annotate: the gated corpus's span-labelled records -> NER examples.

The spans come with the records (collect read them, curate kept them aligned), so there is no
join against label files: a record with ``entities`` (one annotator) or ``annotations`` (several,
from Label Studio) is labelled, one with neither is unlabelled text. Each labelled record is
checked again against the text it now has and against ``annotate.entity_types``; a bad one is a
reject with its reason (``unknown_label``, ``overlapping_spans``...), like a bad label row.

Several annotators: a span (exact start, end and type) is kept when more than half of the
record's annotators marked it; a span exactly half of them marked is a tie, and the record is
dropped as conflicting (as a tied classification vote is), listed in ``conflicts.jsonl``; a span
fewer marked is outvoted (also listed there). Within one annotator spans never overlap, so two
overlapping spans cannot both win. Agreement is the exact-match span F1 between annotators,
micro-averaged over every pair on every shared text. (A span-level Dawid-Skene, weak span labels
and champion pre-labels are the next step: ``annotate.mode`` must be ``human`` for now.)
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Iterable

from lmchain.artifacts import sha256_text
from lmchain.records import Annotation, Document, Entity, NerExample
from lmchain.text_spans import span_problem

Span = tuple[int, int, str]


def tag_names(entity_types: list[str]) -> list[str]:
    """'O', then B- and I- of each type in the configured order: the tagger's label ids."""
    return ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]


def _key(e: Entity) -> Span:
    return (e["start"], e["end"], e["label"])


def aggregate(annotations: list[Annotation]) -> tuple[list[Entity], float, list[dict], bool]:
    """Several annotators' spans -> (kept entities, share of annotators who marked exactly
    those, the spans not kept with their votes, tie: whether some span split them half and half)."""
    n = len(annotations)
    votes: Counter[Span] = Counter(k for a in annotations for k in {_key(e) for e in a["entities"]})
    kept = sorted(k for k, v in votes.items() if 2 * v > n)
    outvoted = [(k, v) for k, v in sorted(votes.items()) if 2 * v <= n]
    disputed = [{"start": s, "end": e, "label": lab, "votes": v} for (s, e, lab), v in outvoted]
    tie = any(2 * v == n for _, v in outvoted)
    exact = sum({_key(e) for e in a["entities"]} == set(kept) for a in annotations) / n
    return [Entity(start=s, end=e, label=lab) for s, e, lab in kept], exact, disputed, tie


def agreement(records: Iterable[Document]) -> dict:
    """Exact-match span F1 between annotators, micro-averaged over every pair of every text that
    two or more annotated (None where no text was): 2|A∩B| / (|A|+|B|), summed before dividing."""
    both = marked = pairs = texts = 0
    per_annotator: Counter[str] = Counter()
    for rec in records:
        anns = rec.get("annotations") or []
        for a in anns:
            per_annotator[a["annotator"]] += 1
        if len(anns) < 2:
            continue
        texts += 1
        for a, b in combinations(anns, 2):
            sa, sb = {_key(e) for e in a["entities"]}, {_key(e) for e in b["entities"]}
            both += 2 * len(sa & sb)
            marked += len(sa) + len(sb)
            pairs += 1
    return {
        "span_f1": (round(both / marked, 4) if marked else 1.0) if pairs else None,
        "texts": texts,
        "pairs": pairs,
        "texts_per_annotator": dict(sorted(per_annotator.items())),
    }


def ner_examples(
    corpus: Iterable[Document], entity_types: list[str]
) -> tuple[list[NerExample], list[Document], list[dict], list[dict], dict]:
    """The corpus -> (examples, unlabelled texts, rejects, conflicts, agreement)."""
    examples: list[NerExample] = []
    unlabelled: list[Document] = []
    rejects: list[dict] = []
    conflicts: list[dict] = []
    multi: list[Document] = []
    used: set[str] = set()
    for rec in corpus:
        h = sha256_text(rec["text"])
        source = rec.get("source", "unknown")
        if "entities" not in rec and not rec.get("annotations"):
            unlabelled.append(Document(id=rec["id"], text=rec["text"], source=source))
            continue
        if h in used:  # the first labelled copy that was good wins (curate's dedup usually leaves none)
            rejects.append({"id": rec["id"], "text": rec["text"], "reason": "duplicate_text: labelled twice"})
            continue
        annotators: list[str] = []
        if "entities" in rec:
            entities, confidence = list(rec["entities"]), 1.0
        else:
            anns = rec["annotations"]
            multi.append(rec)
            annotators = [a["annotator"] for a in anns]
            bad = next(
                ((a["annotator"], p) for a in anns if (p := span_problem(rec["text"], a["entities"], entity_types))),
                None,
            )
            if bad:
                kind, _, detail = bad[1].partition(": ")
                rejects.append(
                    {
                        "id": rec["id"],
                        "text": rec["text"],
                        "annotations": anns,
                        "reason": f"{kind}: annotator {bad[0]}: {detail}",
                    }
                )
                continue
            entities, confidence, disputed, tie = aggregate(anns)
            if disputed:
                conflicts.append(
                    {
                        "id": rec["id"],
                        "text": rec["text"],
                        "disputed": disputed,
                        "kept": entities,
                        "annotators": annotators,
                        "dropped": tie,
                    }
                )
            if tie:
                rejects.append(
                    {
                        "id": rec["id"],
                        "text": rec["text"],
                        "annotations": anns,
                        "reason": "conflicting_spans: annotators split evenly on a span",
                    }
                )
                continue
        problem = span_problem(rec["text"], entities, entity_types)
        if problem:
            rejects.append({"id": rec["id"], "text": rec["text"], "entities": entities, "reason": problem})
            continue
        used.add(h)
        ex = NerExample(
            id=rec["id"],
            text=rec["text"],
            entities=sorted(entities, key=lambda e: e["start"]),
            source=source,
            provenance="human",
            confidence=round(confidence, 4),
        )
        if annotators:
            ex["annotators"] = annotators
        examples.append(ex)
    return examples, unlabelled, rejects, conflicts, agreement(multi)


def type_counts(examples: Iterable[NerExample]) -> dict[str, int]:
    return dict(sorted(Counter(e["label"] for ex in examples for e in ex["entities"]).items()))
