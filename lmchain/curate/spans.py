"""Keeping a ``task: ner`` record's entity spans on their entities while curate changes its text.

A step that changes the text (normalisation, boilerplate and C4 line removal, PII redaction)
would leave the character offsets of ``entities`` (and of each annotator's spans in
``annotations``) pointing at other characters. After each such step the spans are moved through
an :class:`~lmchain.text_spans.Alignment` of the old text onto the new one: the exact
replacements where the step knows them (PII redaction), else an alignment of the two texts. A
moved entity must read what it read before, normalised by the same rules when the step
normalised the text; when one does not (a redaction inside or across an entity, a boundary
inside a repaired character, an entity on a dropped line) the record is rejected with the
reason ``<step>_breaks_entity``, as collected. Offsets are never shifted on a guess.
"""

from __future__ import annotations

import copy
from typing import Any

from lmchain.records import Document
from lmchain.text import normalize_text
from lmchain.text_spans import OffsetMap, align, map_entities

SPAN_KEYS = ("entities", "annotations")


def has_spans(rec: Document) -> bool:
    return any(k in rec for k in SPAN_KEYS)


def snapshot(rec: Document) -> dict[str, Any]:
    """The record's spans as they are now: what its reject shows if a later step drops it."""
    return {k: copy.deepcopy(rec[k]) for k in SPAN_KEYS if k in rec}  # type: ignore[literal-required]


def follow(rec: Document, before: str, step: Any) -> str | None:
    """Move ``rec``'s spans from ``before`` onto its new text after ``step``; a reject reason when
    an entity cannot follow (``rec`` is then left as it was, spans included, but for its text).

    The reason is the kind alone (``pii_breaks_entity``), as curate's other reasons are: the
    manifest counts reasons by their whole text. Which entity, and why, goes to the reject's
    ``detail`` (``rec["detail"]``)."""
    after = rec["text"]
    edits = getattr(step, "alignment", None)
    alignment: OffsetMap = edits(before, after) if edits is not None else align(before, after)
    # Normalising is meant to change what an entity reads ("Zu\u0308rich" -> "Zürich"): it must
    # read its own normalised form. Any other step must leave an entity's characters alone.
    expect = normalize_text if getattr(step, "normalize", False) else None
    moved: dict[str, Any] = {}
    if "entities" in rec:
        moved["entities"], why = map_entities(rec["entities"], alignment, before, after, expect)
        if why:
            rec["detail"] = why
            return f"{step.name}_breaks_entity"
    if "annotations" in rec:
        moved["annotations"] = []
        for a in rec["annotations"]:
            entities, why = map_entities(a["entities"], alignment, before, after, expect)
            if why:
                rec["detail"] = f"annotator {a['annotator']}: {why}"
                return f"{step.name}_breaks_entity"
            moved["annotations"].append({**a, "entities": entities})
    rec.update(moved)  # type: ignore[typeddict-item]
    return None
