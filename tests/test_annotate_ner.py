"""annotate for task: ner: span-labelled corpus records become NER splits (by a hash of the
text, like classification examples), several annotators are aggregated span by span, and bad
records are rejects with their reason."""

import json

import pytest
from conftest import needs_conll
from test_ner_sources import conll_subset

from lmchain.annotate.spans import aggregate, agreement, tag_names
from lmchain.annotate.splits import split_of
from lmchain.artifacts import read_jsonl
from lmchain.config import AnnotateConfig
from lmchain.errors import InputError
from lmchain.sources.spans import read_conll_rows
from lmchain.stages.annotate import run
from lmchain.text_spans import entity_texts, span_problem

TYPES = ["PER", "ORG", "LOC", "MISC"]
TEXT = "Angela Merkel met Emmanuel Macron in Berlin ."
MERKEL, MACRON, BERLIN = (0, 13, "PER"), (18, 33, "PER"), (37, 43, "LOC")


def spans(*triples):
    return [{"start": s, "end": e, "label": lab} for s, e, lab in triples]


def corpus_file(tmp_path, records):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def annotate(ctx, tmp_path, records, **cfg):
    m = run(AnnotateConfig(entity_types=TYPES, **cfg), ctx, {"gate": {"outputs": {"records": str(corpus_file(tmp_path, records))}}})
    return m, {s: list(read_jsonl(m.outputs[s])) for s in ("train", "validation", "test")}


@needs_conll
def test_conll_records_become_ner_splits(ctx, tmp_path):
    rows = list(read_conll_rows(conll_subset(tmp_path, 300)))
    records = [{"id": f"c{i}", "text": t, "source": "file", "entities": x["entities"]} for i, (_, t, x, _) in
               enumerate(rows)]
    # CoNLL repeats some lines ("-- Reuters"): curate's dedup removes them before annotate; here, by hand
    seen, unique = set(), []
    for r in records:
        if r["text"] not in seen:
            seen.add(r["text"])
            unique.append(r)
    records = unique + [{"id": "u1", "text": "An unlabelled sentence about Rome .", "source": "file"}]
    m, splits = annotate(ctx, tmp_path, records)
    examples = [e for s in splits.values() for e in s]
    assert len(examples) == len(unique) and m.counts["unlabelled"] == 1
    assert {e["id"] for e in examples} == {r["id"] for r in unique}
    by_id = {r["id"]: r for r in unique}
    for split, items in splits.items():
        for ex in items:
            assert split_of(ex["text"], AnnotateConfig(entity_types=TYPES)) == split  # the text alone decides
            assert ex["entities"] == by_id[ex["id"]]["entities"] and span_problem(ex["text"], ex["entities"], TYPES) is None
            assert ex["provenance"] == "human" and ex["confidence"] == 1.0
    assert 0.1 < len(splits["test"]) / len(examples) < 0.3
    labels = json.loads(open(m.outputs["labels"]).read())
    assert labels == {"task": "ner", "names": TYPES, "tags": tag_names(TYPES)}
    assert labels["tags"][:3] == ["O", "B-PER", "I-PER"]
    assert m.info["task"] == "ner" and sum(m.info["entity_counts"]["train"].values()) > 100
    assert [r["text"] for r in read_jsonl(m.outputs["unlabelled"])] == ["An unlabelled sentence about Rome ."]
    # the same corpus gives the same splits
    m2, again = annotate(ctx, tmp_path, list(reversed(records)))
    assert {s: sorted(e["id"] for e in v) for s, v in again.items()} == {s: sorted(e["id"] for e in v) for s, v in splits.items()}


def test_several_annotators_and_bad_records(ctx, tmp_path):
    def ann(who, *triples):
        return {"annotator": who, "entities": spans(*triples)}

    records = [
        # two of three agree on Berlin as LOC, all on Merkel; Macron marked by one only: outvoted
        {"id": "m1", "text": TEXT, "source": "file", "annotations": [
            ann("a", MERKEL, MACRON, BERLIN), ann("b", MERKEL, BERLIN), ann("c", MERKEL, (37, 43, "ORG"))]},
        # two annotators split on Berlin's type: a tie, the record is dropped as conflicting
        {"id": "m2", "text": "Bob went to Paris .", "source": "file", "annotations": [
            ann("a", (12, 17, "LOC")), ann("b", (12, 17, "ORG"))]},
        {"id": "m3", "text": "Ann likes Rome .", "source": "file", "annotations": [
            ann("a", (0, 3, "PER")), ann("b", (0, 3, "PER"), (10, 14, "LOCATION"))]},
        {"id": "s1", "text": "Ann likes Rome .", "source": "file", "entities": spans((0, 3, "PERSON"))},
        {"id": "s2", "text": "Zed visited Oslo .", "source": "file", "entities": spans((12, 16, "LOC"))},
        {"id": "s3", "text": "Zed visited Oslo .", "source": "file", "entities": spans((0, 3, "PER"))},
        {"id": "s4", "text": "Kim met Lee .", "source": "file", "entities": spans((0, 3, "PER"), (2, 7, "ORG"))},
    ]
    m, splits = annotate(ctx, tmp_path, records)
    examples = {e["id"]: e for s in splits.values() for e in s}
    assert sorted(examples) == ["m1", "s2"]
    m1 = examples["m1"]
    assert entity_texts(m1["text"], m1["entities"]) == ["Angela Merkel", "Berlin"]
    assert m1["entities"][1]["label"] == "LOC" and m1["annotators"] == ["a", "b", "c"]
    assert m1["confidence"] == pytest.approx(1 / 3, abs=1e-4)  # only b marked exactly the kept spans
    reasons = {r["id"]: r["reason"].split(":")[0] for r in read_jsonl(m.outputs["rejects"])}
    assert reasons == {"m2": "conflicting_spans", "m3": "unknown_label", "s1": "unknown_label",
                       "s3": "duplicate_text", "s4": "overlapping_spans"}
    conflicts = {c["id"]: c for c in read_jsonl(m.outputs["conflicts"])}
    assert conflicts["m1"]["dropped"] is False and conflicts["m2"]["dropped"] is True
    assert {(d["start"], d["label"], d["votes"]) for d in conflicts["m1"]["disputed"]} == {(18, "PER", 1), (37, "ORG", 1)}
    agree = json.loads(open(m.outputs["agreement"]).read())
    # pairs on m1: a-b 2*2/(3+2), a-c 2*1/(3+2), b-c 2*1/(2+2); m2: 0/2; m3: 2*1/(1+2)
    assert agree["pairs"] == 5 and agree["span_f1"] == pytest.approx((4 + 2 + 2 + 0 + 2) / (5 + 5 + 4 + 2 + 3), abs=1e-4)
    assert m.drop_reasons == {"conflicting_spans": 1, "unknown_label": 2, "duplicate_text": 1, "overlapping_spans": 1}


def test_aggregation_rules():
    one = [{"annotator": "a", "entities": spans(MERKEL)}]
    assert aggregate(one) == (spans(MERKEL), 1.0, [], False)
    assert agreement([{"annotations": one}])["span_f1"] is None  # nobody to agree with


def test_no_span_labelled_record_is_an_error_that_says_why(ctx, tmp_path):
    with pytest.raises(InputError, match="no span-labelled record"):
        annotate(ctx, tmp_path, [{"id": "u", "text": "just text", "source": "file"}])
