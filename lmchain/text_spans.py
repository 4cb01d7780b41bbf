"""Entity spans over a text: character offsets, BIO tags, and offsets that follow a changing text.

A ``task: ner`` record is a text with entities ``{"start", "end", "label"}`` (:class:`~lmchain.
records.Entity`): ``text[start:end]`` is the entity, offsets in code points, end exclusive.

- :func:`bio_to_spans`: tokens and BIO tags (a CoNLL sentence) -> the tokens joined by single
  spaces, with the entities' character spans. An ``I-X`` that does not continue an ``X`` starts
  a new entity, as conlleval reads it (and as :func:`lmchain.train.ner.spans` scores it); such
  repairs are counted, so a file in IOB1 or with sloppy tags reads as its scorer would read it.
- :func:`spans_to_bio`: a text and its entities -> token offsets and BIO tags. The tokens are the
  text's whitespace-separated runs, cut again at every entity boundary that falls inside one, so
  that every valid set of spans has a tagging (a Label Studio span may end inside "Obama's") and
  CoNLL text, whose entities are whole tokens, gives back its own tokens and tags exactly.
- :func:`span_problem`: why a set of spans is not valid for a text (outside it, empty, starting
  or ending on whitespace, overlapping, an unknown label), or None. Valid spans are exactly those
  with a BIO tagging that converts back to the same spans.
- :class:`Alignment`: where the offsets of an old text land in a new one, after curate normalised
  or redacted it; :func:`map_entities` moves spans through it, or says why it cannot (a boundary
  inside a replaced region, an entity deleted), so that offsets are never shifted silently.
"""

from __future__ import annotations

import bisect
import difflib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

from lmchain.records import Entity

_RUN = re.compile(r"\S+")


# --------------------------------------------------------------------------- BIO <-> spans


def bio_to_spans(tokens: Sequence[str], tags: Sequence[str]) -> tuple[str, list[Entity], int]:
    """-> (tokens joined by single spaces, entities, number of I- tags read as B-).

    Raises ValueError for a token that is empty or holds whitespace (it could not be found again
    in the joined text), a tag that is not O, B-TYPE or I-TYPE, or lengths that differ."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    entities: list[Entity] = []
    current: Entity | None = None
    repaired = 0
    pos = 0
    for i, (token, tag) in enumerate(zip(tokens, tags)):
        if not token or any(ch.isspace() for ch in token):
            raise ValueError(f"token {i} {token!r} is empty or holds whitespace")
        start, end = pos, pos + len(token)
        pos = end + 1
        if tag == "O":
            current = None
            continue
        if tag[:2] not in ("B-", "I-") or len(tag) < 3:
            raise ValueError(f"tag {tag!r} of token {i} is not BIO (O, B-TYPE or I-TYPE)")
        label = tag[2:]
        if tag.startswith("I-") and current is not None and current["label"] == label:
            current["end"] = end
            continue
        if tag.startswith("I-"):
            repaired += 1  # conlleval: an I- that continues nothing begins an entity
        current = Entity(start=start, end=end, label=label)
        entities.append(current)
    return " ".join(tokens), entities, repaired


def token_offsets(text: str, entities: Iterable[Entity] = ()) -> list[tuple[int, int]]:
    """The text's whitespace-separated runs as (start, end), each cut at the entity boundaries inside it."""
    cuts = sorted({p for e in entities for p in (e["start"], e["end"])})
    out: list[tuple[int, int]] = []
    for m in _RUN.finditer(text):
        start, end = m.span()
        i = bisect.bisect_right(cuts, start)
        while i < len(cuts) and cuts[i] < end:
            out.append((start, cuts[i]))
            start = cuts[i]
            i += 1
        out.append((start, end))
    return out


def spans_to_bio(text: str, entities: Sequence[Entity]) -> tuple[list[tuple[int, int]], list[str]]:
    """-> (token offsets, one BIO tag per token). Raises ValueError when the spans are not valid
    (:func:`span_problem`); ``[text[s:e] for s, e in offsets]`` are the tokens."""
    problem = span_problem(text, entities)
    if problem:
        raise ValueError(problem)
    offsets = token_offsets(text, entities)
    ordered = sorted(entities, key=lambda e: e["start"])
    tags: list[str] = []
    k = 0
    for start, end in offsets:
        while k < len(ordered) and ordered[k]["end"] <= start:
            k += 1
        if k < len(ordered) and ordered[k]["start"] <= start and end <= ordered[k]["end"]:
            tags.append(("B-" if start == ordered[k]["start"] else "I-") + ordered[k]["label"])
        else:
            tags.append("O")
    return offsets, tags


def span_problem(text: str, entities: Any, labels: Iterable[str] | None = None) -> str | None:
    """Why ``entities`` are not valid spans of ``text`` (a reject reason: ``kind: detail``), or None.

    Valid: a list of ``{"start": int, "end": int, "label": str}`` with 0 <= start < end <= len(text),
    no whitespace at either end, no two overlapping, and (with ``labels``) every label among them."""
    if not isinstance(entities, list):
        return f"bad_spans: entities must be a list, got {type(entities).__name__}"
    known = set(labels) if labels is not None else None
    spans = []
    for e in entities:
        if not isinstance(e, dict) or not {"start", "end", "label"} <= set(e):
            return f"bad_spans: {str(e)[:80]} is not {{start, end, label}}"
        start, end, label = e["start"], e["end"], e["label"]
        if not (type(start) is int and type(end) is int) or not isinstance(label, str) or not label:
            return f"bad_spans: {str(e)[:80]} needs integer start and end and a label"
        if end <= start:
            return f"empty_span: [{start}, {end}) {label} ends at or before its start"
        if start < 0 or end > len(text):
            return f"span_outside_text: [{start}, {end}) {label} in a text of {len(text)} characters"
        if text[start].isspace() or text[end - 1].isspace():
            return f"span_edge_whitespace: [{start}, {end}) {label} starts or ends on whitespace"
        if known is not None and label not in known:
            return f"unknown_label: {label!r} is not one of {sorted(known)}"
        spans.append((start, end, label))
    spans.sort()
    for (s1, e1, l1), (s2, e2, l2) in zip(spans, spans[1:]):
        if s2 < e1:
            return f"overlapping_spans: [{s1}, {e1}) {l1} and [{s2}, {e2}) {l2}"
    return None


def entity_texts(text: str, entities: Iterable[Entity]) -> list[str]:
    return [text[e["start"] : e["end"]] for e in entities]


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without whitespace at its ends (a Label Studio selection often takes a space along)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# --------------------------------------------------------------------------- offsets through edits


@dataclass(frozen=True)
class Alignment:
    """Old text -> new text, as segments that cover the old text in order: ``(a, b, c, d, same)``
    says old ``[a, b)`` became new ``[c, d)``, unchanged when ``same`` (then b - a == d - c).
    A replaced segment maps only its ends; a position strictly inside it has no image."""

    segments: tuple[tuple[int, int, int, int, bool], ...]
    old_len: int
    new_len: int

    @classmethod
    def identity(cls, n: int) -> Alignment:
        return cls(((0, n, 0, n, True),), n, n)

    @classmethod
    def from_opcodes(cls, opcodes: Iterable[tuple[str, int, int, int, int]], old_len: int, new_len: int) -> Alignment:
        # Insertions (a == b) own no old position: the next segment's start already counts them.
        segs = tuple((a, b, c, d, tag == "equal") for tag, a, b, c, d in opcodes if a < b)
        return cls(segs, old_len, new_len)

    @classmethod
    def from_edits(cls, old: str, edits: Iterable[tuple[int, int, str]]) -> Alignment:
        """Replacements ``(start, end, new text)`` of ``old``, in order and not overlapping."""
        segs: list[tuple[int, int, int, int, bool]] = []
        pos = shift = 0
        for start, end, new in edits:
            if start > pos:
                segs.append((pos, start, pos + shift, start + shift, True))
            if end > start:
                segs.append((start, end, start + shift, start + shift + len(new), False))
            shift += len(new) - (end - start)
            pos = end
        if pos < len(old) or not segs:
            segs.append((pos, len(old), pos + shift, len(old) + shift, True))
        return cls(tuple(segs), len(old), len(old) + shift)

    def _find(self, p: int, for_end: bool) -> tuple[int, int, int, int, bool] | None:
        starts = [s[0] for s in self.segments]
        i = bisect.bisect_right(starts, p - 1 if for_end else p) - 1
        return self.segments[i] if 0 <= i < len(self.segments) else None

    def start(self, p: int) -> int | None:
        """Where an entity starting at old ``p`` starts in the new text (None: inside a replacement)."""
        if p >= self.old_len:
            return self.new_len
        seg = self._find(p, for_end=False)
        if seg is None:
            return None
        a, b, c, d, same = seg
        if same:
            return c + (p - a)
        return c if p == a or c == d else None  # a deletion: the entity starts where it was

    def end(self, p: int) -> int | None:
        """Where an entity ending at old ``p`` (exclusive) ends in the new text."""
        if p <= 0:
            return 0
        seg = self._find(p, for_end=True)
        if seg is None:
            return None
        a, b, c, d, same = seg
        if same:
            return c + (p - a)
        return d if p == b or c == d else None


class OffsetMap(Protocol):
    """Old offsets -> new ones: an :class:`Alignment`, or several applied in turn (:func:`chain`)."""

    def start(self, p: int) -> int | None: ...

    def end(self, p: int) -> int | None: ...


@dataclass(frozen=True)
class Chained:
    """Alignments applied one after another (each pass of edits shifts the text the next one sees)."""

    passes: tuple[OffsetMap, ...]

    def start(self, p: int) -> int | None:
        q: int | None = p
        for a in self.passes:
            q = a.start(q) if q is not None else None
        return q

    def end(self, p: int) -> int | None:
        q: int | None = p
        for a in self.passes:
            q = a.end(q) if q is not None else None
        return q


def chain(passes: Sequence[OffsetMap], n: int) -> OffsetMap:
    """One map for ``passes`` applied in turn to a text of ``n`` characters."""
    if not passes:
        return Alignment.identity(n)
    return passes[0] if len(passes) == 1 else Chained(tuple(passes))


def _removable(ch: str) -> bool:
    """Characters normalisation deletes: whitespace, control and format (zero-width) characters."""
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


def _walk(old: str, new: str) -> list[tuple[str, int, int, int, int]] | None:
    """Opcodes for ``new`` made from ``old`` by deleting whitespace and control characters and
    turning whitespace into spaces or newlines (what whitespace normalisation, line stripping and
    dropped blank lines do), found in one pass; None when ``new`` is not such an edit."""
    ops: list[list] = []

    def add(tag: str, i: int, j: int, width: int) -> None:
        if ops and ops[-1][0] == tag:
            ops[-1][2] += 1
            ops[-1][4] += width
        else:
            ops.append([tag, i, i + 1, j, j + width])

    i = j = 0
    while i < len(old):
        if j < len(new) and old[i] == new[j]:
            add("equal", i, j, 1)
            j += 1
        elif j < len(new) and new[j] in " \n" and old[i].isspace():
            add("replace", i, j, 1)
            j += 1
        elif _removable(old[i]):
            add("delete", i, j, 0)
        else:
            return None
        i += 1
    return [tuple(op) for op in ops] if j == len(new) else None


def align(old: str, new: str) -> Alignment:
    """An alignment of two texts, for edits no step described (whitespace, dropped lines, Unicode
    repair, NFKC). Whitespace and control-character edits, the common case, are aligned in one
    pass (:func:`_walk`); anything else by longest common runs (difflib) after taking the common
    prefix and suffix, with difflib's popular-character heuristic on long texts, where its exact
    search grows with the square of the length (29 s for 21,000 characters). A run of characters
    can align in more than one way: callers check what a mapped entity reads (:func:`map_entities`)."""
    if old == new:
        return Alignment.identity(len(old))
    walked = _walk(old, new)
    if walked is not None:
        return Alignment.from_opcodes(walked, len(old), len(new))
    pre = 0
    limit = min(len(old), len(new))
    while pre < limit and old[pre] == new[pre]:
        pre += 1
    suf = 0
    while suf < limit - pre and old[len(old) - 1 - suf] == new[len(new) - 1 - suf]:
        suf += 1
    mid_old, mid_new = old[pre : len(old) - suf], new[pre : len(new) - suf]
    ops: list[tuple[str, int, int, int, int]] = [("equal", 0, pre, 0, pre)] if pre else []
    matcher = difflib.SequenceMatcher(None, mid_old, mid_new, autojunk=len(mid_old) > 2000)
    ops += [(t, a + pre, b + pre, c + pre, d + pre) for t, a, b, c, d in matcher.get_opcodes()]
    if suf:
        ops.append(("equal", len(old) - suf, len(old), len(new) - suf, len(new)))
    return Alignment.from_opcodes(ops, len(old), len(new))


def map_entities(
    entities: Sequence[Entity], alignment: OffsetMap, old: str, new: str, expect=None
) -> tuple[list[Entity], str | None]:
    """The entities moved from ``old`` to ``new`` -> (entities, None), or ([], reason).

    ``expect(old entity text)`` is what the entity must read in the new text (default: exactly
    what it read before); an entity that reads anything else, lost its boundaries inside a
    replaced region or was deleted is a reason, never a shifted guess."""
    moved: list[Entity] = []
    for e in entities:
        start, end = alignment.start(e["start"]), alignment.end(e["end"])
        was = old[e["start"] : e["end"]]
        # The reason names the entity by offsets and type, not by its text: that may be the PII removed.
        where = f"[{e['start']}, {e['end']}) {e['label']}"
        if start is None or end is None:
            return [], f"{where}: a boundary falls inside a changed region"
        if end <= start:
            return [], f"{where}: was removed"
        want = expect(was) if expect is not None else was
        if new[start:end] != want:
            return [], f"{where}: would read something else"
        moved.append(Entity(start=start, end=end, label=e["label"]))
    return moved, None
