"""Entity spans: BIO <-> character spans on all of CoNLL-2003 valid, random span sets, the
validity rules, and offsets moved through edits (never onto other characters)."""

import random
from pathlib import Path

import pytest
from conftest import conll_dir, needs_conll

from lmchain.sources.spans import read_conll_rows
from lmchain.text_spans import (
    Alignment,
    align,
    bio_to_spans,
    chain,
    entity_texts,
    map_entities,
    span_problem,
    spans_to_bio,
    token_offsets,
)
from lmchain.train.ner import read_conll, spans

CONLL = conll_dir() or Path("/nonexistent")


@needs_conll
def test_round_trip_on_all_of_conll_valid():
    sentences = read_conll(CONLL / "valid.txt")
    assert len(sentences) == 3250
    n_entities = 0
    for s in sentences:
        text, entities, repaired = bio_to_spans(s["tokens"], s["tags"])
        assert text == " ".join(s["tokens"]) and repaired == 0
        # every span's text is its tokens, joined by single spaces
        bio = {(kind, a, b) for kind, a, b in spans(s["tags"])}
        assert {(e["label"], e["start"], e["end"]) for e in entities} == {
            (kind, len(" ".join(s["tokens"][:a])) + (a > 0), len(" ".join(s["tokens"][:b]))) for kind, a, b in bio
        }
        assert entity_texts(text, entities) == [" ".join(s["tokens"][a:b]) for _, a, b in sorted(bio, key=lambda x: x[1])]
        assert span_problem(text, entities, ["PER", "ORG", "LOC", "MISC"]) is None
        # spans -> BIO gives back the very tokens and tags; BIO -> spans the very spans
        offsets, tags = spans_to_bio(text, entities)
        assert [text[a:b] for a, b in offsets] == s["tokens"] and tags == s["tags"]
        assert bio_to_spans([text[a:b] for a, b in offsets], tags)[:2] == (text, entities)
        n_entities += len(entities)
    assert n_entities == 5942  # CoNLL-2003 dev: 5,942 entities (conlleval's count)


@needs_conll
def test_the_conll_reader_agrees_with_the_tagger_reader():
    rows = list(read_conll_rows(CONLL / "valid.txt"))
    sentences = read_conll(CONLL / "valid.txt")
    assert len(rows) == len(sentences) and all(bad is None for *_, bad in rows)
    for (_, text, extra, _), s in zip(rows, sentences):
        assert text == " ".join(s["tokens"])
        assert spans_to_bio(text, extra["entities"])[1] == s["tags"]


def test_an_i_tag_that_continues_nothing_starts_an_entity_as_conlleval_reads_it():
    text, entities, repaired = bio_to_spans(["EU", "rejects", "German", "lamb"], ["I-ORG", "O", "I-MISC", "I-PER"])
    assert entities == [
        {"start": 0, "end": 2, "label": "ORG"},
        {"start": 11, "end": 17, "label": "MISC"},
        {"start": 18, "end": 22, "label": "PER"},
    ]
    assert repaired == 3
    assert {(e["label"], e["start"], e["end"]) for e in entities} == {
        ("ORG", 0, 2), ("MISC", 11, 17), ("PER", 18, 22)}
    # and the scorer (conlleval semantics) finds the same three entities in those tags
    assert {k for k, *_ in spans(["I-ORG", "O", "I-MISC", "I-PER"])} == {"ORG", "MISC", "PER"}
    # B- after B- of the same type: two entities, none repaired
    assert bio_to_spans(["A", "B"], ["B-PER", "B-PER"])[1:] == (
        [{"start": 0, "end": 1, "label": "PER"}, {"start": 2, "end": 3, "label": "PER"}], 0)


@pytest.mark.parametrize("tokens,tags", [(["a"], ["X-PER"]), (["a"], ["B-"]), (["a b"], ["O"]), ([""], ["O"]),
                                         (["a"], ["O", "O"])])
def test_bad_bio_input_is_refused(tokens, tags):
    with pytest.raises(ValueError):
        bio_to_spans(tokens, tags)


def _random_case(rng: random.Random):
    words = ["Obama's", "visit", "to", "Paris", "(", "France", ")", "U.S.", "New", "York-based", "firm", ",", "ok"]
    text = ""
    for _ in range(rng.randint(1, 12)):
        text += rng.choice(words) + rng.choice([" ", " ", "  ", "\n", "\t"])
    text = text.strip() or "x"
    # random non-overlapping spans with no whitespace at their ends, possibly inside words
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 2 * rng.randint(0, 4))))
    entities = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            entities.append({"start": a, "end": b, "label": rng.choice(["PER", "LOC"])})
    return text, entities


def test_random_span_sets_round_trip_through_bio():
    rng = random.Random(7)
    for _ in range(3000):
        text, entities = _random_case(rng)
        assert span_problem(text, entities) is None
        offsets, tags = spans_to_bio(text, entities)
        assert all(text[a:b] and not text[a:b].isspace() for a, b in offsets)
        # tokens cover every non-space character exactly once
        assert "".join(text[a:b] for a, b in offsets) == "".join(text.split())
        # the BIO tags over those token offsets give back exactly the spans
        back, current = [], None
        for (a, b), tag in zip(offsets, tags):
            if tag.startswith("B-"):
                current = {"start": a, "end": b, "label": tag[2:]}
                back.append(current)
            elif tag.startswith("I-"):
                assert current is not None and current["label"] == tag[2:]  # valid IOB2: no repair needed
                current["end"] = b
            else:
                current = None
        assert back == sorted(entities, key=lambda e: e["start"])


@pytest.mark.parametrize("entities,kind", [
    ([{"start": 3, "end": 3, "label": "PER"}], "empty_span"),
    ([{"start": 5, "end": 2, "label": "PER"}], "empty_span"),
    ([{"start": 0, "end": 99, "label": "PER"}], "span_outside_text"),
    ([{"start": -1, "end": 2, "label": "PER"}], "span_outside_text"),
    ([{"start": 0, "end": 5, "label": "PER"}], "span_edge_whitespace"),  # "John "
    ([{"start": 0, "end": 4, "label": "PER"}, {"start": 2, "end": 10, "label": "ORG"}], "overlapping_spans"),
    ([{"start": 0, "end": 4, "label": "PERSON"}], "unknown_label"),
    ([{"start": "0", "end": 4, "label": "PER"}], "bad_spans"),
    ([{"start": 0, "end": 4}], "bad_spans"),
    ({"start": 0}, "bad_spans"),
])
def test_invalid_spans_are_named(entities, kind):
    problem = span_problem("John Smith works", entities, ["PER", "ORG"])
    assert problem is not None and problem.split(":")[0] == kind
    if kind == "unknown_label":
        return  # the label set is the caller's: spans_to_bio tags any type
    with pytest.raises(ValueError):
        spans_to_bio("John Smith works", entities if isinstance(entities, list) else [entities])


def test_token_offsets_cut_words_at_entity_boundaries_only():
    text = "Obama's visit"
    assert token_offsets(text) == [(0, 7), (8, 13)]
    assert token_offsets(text, [{"start": 0, "end": 5, "label": "PER"}]) == [(0, 5), (5, 7), (8, 13)]


def test_offsets_move_through_exact_edits():
    old = "mail jo@x.com to Anna Smith at ACME"
    new = "mail <EMAIL> to Anna Smith at ACME"
    a = Alignment.from_edits(old, [(5, 13, "<EMAIL>")])
    ents = [{"start": 17, "end": 27, "label": "PER"}, {"start": 31, "end": 35, "label": "ORG"}]
    moved, why = map_entities(ents, a, old, new)
    assert why is None and entity_texts(new, moved) == ["Anna Smith", "ACME"]
    # an entity that held the redacted address, or ended inside it, cannot follow
    assert map_entities([{"start": 5, "end": 13, "label": "PER"}], a, old, new)[1] is not None
    assert "changed region" in map_entities([{"start": 0, "end": 7, "label": "PER"}], a, old, new)[1]
    assert map_entities([{"start": 8, "end": 13, "label": "ORG"}], a, old, new)[1] is not None


def test_offsets_move_through_an_aligned_rewrite_or_the_entity_is_refused():
    old = "  New   York\u00a0Times said\n\n\n Anna  Smith left "
    new = "New York Times said\n\nAnna Smith left"
    ents = [{"start": 2, "end": 18, "label": "ORG"}, {"start": old.index("Anna"), "end": old.index("Anna") + 11,
                                                       "label": "PER"}]
    assert entity_texts(old, ents) == ["New   York\u00a0Times", "Anna  Smith"]
    moved, why = map_entities(ents, align(old, new), old, new, expect=lambda t: " ".join(t.split()))
    assert why is None and entity_texts(new, moved) == ["New York Times", "Anna Smith"]
    # without saying how the text may change, an entity that reads differently is refused
    assert "would read" in map_entities(ents, align(old, new), old, new)[1]
    # an entity on a removed line is refused, not moved onto its neighbour
    old2, new2 = "Menu\nAnna Smith left", "Anna Smith left"
    assert "removed" in map_entities([{"start": 0, "end": 4, "label": "ORG"}], align(old2, new2), old2, new2)[1]


def test_chained_alignments_and_identity():
    old = "a@b.co and c@d.co call Bob"
    first = Alignment.from_edits(old, [(0, 6, "<EMAIL>")])
    mid = "<EMAIL> and c@d.co call Bob"
    second = Alignment.from_edits(mid, [(12, 18, "<EMAIL>")])
    new = "<EMAIL> and <EMAIL> call Bob"
    moved, why = map_entities([{"start": 23, "end": 26, "label": "PER"}], chain([first, second], len(old)), old, new)
    assert why is None and entity_texts(new, moved) == ["Bob"]
    ident = Alignment.identity(5)
    assert [ident.start(i) for i in range(6)] == list(range(6)) and ident.end(5) == 5


def test_a_long_document_aligns_in_one_pass_when_only_whitespace_changed():
    from lmchain.text import normalize_text
    from lmchain.text_spans import _walk

    rng = random.Random(3)
    words = "the market in New York said Paris fell , .".split()
    old = "".join(rng.choice(words) + rng.choice([" ", "  ", "\t", " \n ", "\u00a0", "\u200b "]) for _ in range(40000))
    new = normalize_text(old)
    assert _walk(old, new) is not None  # no quadratic text diff for whitespace edits (difflib: 29 s at 21k chars)
    starts = [m for m in range(len(old) - 8) if old.startswith("New York", m)][::50]
    ents = [{"start": s, "end": s + 8, "label": "LOC"} for s in starts]
    moved, why = map_entities(ents, align(old, new), old, new, normalize_text)
    assert why is None and entity_texts(new, moved) == ["New York"] * len(ents)
    assert _walk("Caf\u00c3\u00a9", "Caf\u00e9") is None  # a repaired character: left to the text diff
