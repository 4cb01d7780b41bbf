"""Reading labelled text for ``task: ner``: CoNLL files, JSONL with character spans, Label Studio exports.

Each reader yields what :func:`lmchain.sources.files.read_file` yields, ``(line, text, extra,
reject reason)``, with the spans in ``extra``: ``entities`` (one annotator's, a list of
:class:`~lmchain.records.Entity`) or ``annotations`` (``[{"annotator", "entities"}]``, every
annotator of a Label Studio task kept, for annotate to aggregate); the rest of ``extra`` is the
record's ``meta``. A text without spans (an unannotated Label Studio task, a JSONL row without
``entities``) is unlabelled text; ``entities: []`` is a text labelled as holding no entity.

A bad row is a reject that keeps its text and its spans as read, with the reason
(:func:`lmchain.text_spans.span_problem` names most: a span outside the text, ``end <= start``,
overlapping spans, a span starting or ending on whitespace). Also rejected: a span whose ``text``
field differs from the slice it points at (``span_text_mismatch``), a region with several labels
(``several_labels``), a CoNLL line without a tag (``bad_conll_line``) or a tag that is not BIO
(``bad_tag``). Whether a label is one of ``annotate.entity_types`` is decided by annotate, which
holds the label set, as it does for classification labels.

Decisions: in CoNLL, an ``I-X`` that continues no ``X`` starts an entity, as conlleval reads it
(so IOB1 files read correctly), counted in ``bio_repaired``; a Label Studio span's whitespace at
either end is trimmed (its UI selects a word with its trailing space), the check against its
``text`` field made before trimming.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from lmchain.errors import InputError
from lmchain.records import Annotation, Entity
from lmchain.text_spans import bio_to_spans, span_problem, trim_span

Row = tuple[int, str | None, dict[str, Any], str | None]


def read_spans(path: Path, fmt: str, text_field: str = "text") -> Iterator[Row]:
    """The rows of ``path`` in span format ``fmt`` ('conll', 'spans' or 'label-studio')."""
    readers = {"conll": read_conll_rows, "spans": read_span_jsonl, "label-studio": read_label_studio}
    if fmt not in readers:
        raise InputError(f"collect.files: unknown span format '{fmt}'; use one of {', '.join(readers)}")
    try:
        yield from readers[fmt](path, text_field)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"collect.files: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-encode it as UTF-8"
        ) from None


def read_conll_rows(path: Path, text_field: str = "text") -> Iterator[Row]:
    """One row per sentence (line number of its first token); the last column is the tag."""
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    problem: str | None = None

    def sentence() -> Row:
        text = " ".join(tokens)
        if problem:
            return first, text, {"tokens": list(tokens), "tags": list(tags)}, problem
        try:
            text, entities, repaired = bio_to_spans(tokens, tags)
        except ValueError as exc:
            return first, text, {"tokens": list(tokens), "tags": list(tags)}, f"bad_tag: {exc}"
        return first, text, {"entities": entities, **({"bio_repaired": repaired} if repaired else {})}, None

    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens or problem:
                    yield sentence()
                tokens, tags, problem = [], [], None
                continue
            if not tokens and problem is None:
                first = n
            if len(parts) < 2:
                problem = problem or f"bad_conll_line: line {n} {line.strip()[:80]!r} has no tag"
                continue
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens or problem:
        yield sentence()


def _entities_problem(text: str, entities: Any) -> str | None:
    problem = span_problem(text, entities)
    if problem:
        return problem
    for e in entities:
        if "text" in e and e["text"] != text[e["start"] : e["end"]]:
            return (
                f"span_text_mismatch: [{e['start']}, {e['end']}) {e['label']} says {str(e['text'])[:40]!r} "
                f"but the text there reads {text[e['start'] : e['end']][:40]!r}"
            )
    return None


def read_span_jsonl(path: Path, text_field: str = "text") -> Iterator[Row]:
    """``{text_field: ..., "entities": [{start, end, label[, text]}], ...}`` per line. Lines are
    read by the plain JSONL reader (bad JSON, a missing text field); only the spans are checked here."""
    from lmchain.sources.files import _read_jsonl

    with open(path, encoding="utf-8", newline="") as fh:
        for i, text, obj, bad in _read_jsonl(fh, path, text_field):
            if bad or text is None or "entities" not in obj:
                yield i, text, obj, bad  # a rejected line, or unlabelled text
                continue
            entities = obj.pop("entities")
            problem = _entities_problem(text, entities)
            if problem:
                yield i, text, {**obj, "entities": entities}, problem
                continue
            yield (
                i,
                text,
                {**obj, "entities": [Entity(start=e["start"], end=e["end"], label=e["label"]) for e in entities]},
                None,
            )


def label_studio_tasks(path: Path, key: str) -> list:
    """The task list of a Label Studio JSON export; anything else is an InputError naming ``key``
    (the setting that pointed at the file). Shared by collect's span reader and annotate's importer."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{key}: {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "export the project from Label Studio as JSON"
        ) from None
    if not isinstance(tasks, list):
        raise InputError(f"{key}: {path} is not a Label Studio export (expected a JSON list of tasks)")
    return tasks


def _annotator(annotation: dict) -> str:
    who = annotation.get("completed_by")
    who = who.get("email", who.get("id")) if isinstance(who, dict) else who
    return str(who) if who not in (None, "") else "label-studio"


def _ls_entities(text: str, results: list, who: str) -> tuple[list[Entity], str | None]:
    """One annotator's ``labels`` results -> (entities, None) or ([], reason)."""
    entities: list[Entity] = []
    for r in results:
        if not isinstance(r, dict) or r.get("type") != "labels":
            continue  # choices, relations, text areas: not spans
        v = r.get("value") or {}
        labels = v.get("labels") or []
        start, end = v.get("start"), v.get("end")
        where = f"annotator {who}: [{start}, {end})"
        if not (type(start) is int and type(end) is int):
            return [], f"bad_spans: {where} needs integer start and end"
        if len(labels) != 1 or not isinstance(labels[0], str):
            return [], f"several_labels: {where} has labels {labels}; one region, one type"
        if "text" in v and 0 <= start < end <= len(text) and v["text"] != text[start:end]:
            return [], (
                f"span_text_mismatch: {where} {labels[0]} says {str(v['text'])[:40]!r} but the text there reads "
                f"{text[start:end][:40]!r}"
            )
        if 0 <= start < end <= len(text):
            start, end = trim_span(text, start, end)
            if start == end:
                return [], f"empty_span: {where} {labels[0]} holds only whitespace"
        entities.append(Entity(start=start, end=end, label=labels[0]))
    problem = span_problem(text, entities)
    return entities, (
        f"{problem.split(':', 1)[0]}: annotator {who}: {problem.split(':', 1)[1].strip()}" if problem else None
    )


def read_label_studio(path: Path, text_field: str = "text") -> Iterator[Row]:
    """A Label Studio JSON export of an NER project (``Labels`` over ``Text``): a list of tasks,
    each with ``data[text_field]`` and ``annotations[]`` (``completed_by``, ``result[]`` of
    ``type: labels`` with ``value: {start, end, text, labels}``). Cancelled annotations and
    predictions (pre-labels) are not labels. A JSON-MIN export (flat tasks with ``label``: the
    spans) reads as one annotator."""
    tasks = label_studio_tasks(path, "collect.files")
    for n, task in enumerate(tasks, 1):
        if not isinstance(task, dict):
            yield n, None, {"raw": str(task)[:500]}, "not_an_object: a task must be a JSON object"
            continue
        minimal = "annotations" not in task
        data = task if minimal else (task.get("data") or {})
        text = data.get(text_field)
        meta = {"task_id": task["id"]} if "id" in task else {}
        if not isinstance(text, str):
            yield (
                n,
                None,
                {**meta, "raw": json.dumps(task, ensure_ascii=False)[:500]},
                f"missing_text_field: '{text_field}'",
            )
            continue
        if minimal:
            spans = task.get("label")
            done = (
                [("label-studio", [{"type": "labels", "value": v} for v in spans])] if isinstance(spans, list) else []
            )
        else:
            done = [
                (_annotator(a), a.get("result") or [])
                for a in task["annotations"]
                if isinstance(a, dict) and not a.get("was_cancelled")
            ]
        annotations: list[Annotation] = []
        problem = None
        for who, results in done:
            entities, problem = _ls_entities(text, results, who)
            if problem:
                break
            annotations.append(Annotation(annotator=who, entities=entities))
        if problem:
            yield n, text, {**meta, "annotations": [{"annotator": w, "result": r} for w, r in done]}, problem
        elif annotations:
            yield n, text, {**meta, "annotations": annotations}, None
        else:
            yield n, text, meta, None  # not annotated yet: unlabelled text
