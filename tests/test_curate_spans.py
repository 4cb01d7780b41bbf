"""Curate keeps a task: ner record's spans on their entities: through normalisation, PII
redaction next to an entity, and dedup; a redaction inside or across an entity rejects the
record with its reason, as collected. Never a shifted offset."""

import json

from conftest import needs_conll
from test_ner_sources import conll_subset

from lmchain.artifacts import read_jsonl
from lmchain.config import CurateConfig
from lmchain.curate.pipeline import ChunkWorker
from lmchain.sources.spans import read_conll_rows
from lmchain.stages.curate import curate_to
from lmchain.text import normalize_text
from lmchain.text_spans import entity_texts, span_problem

OFF = {"enabled": False}


def cfg(**changes):
    base = dict(workers=1, min_chars=1, min_words=1, language=OFF, gopher_repetition=OFF, gopher_quality=OFF,
                c4=OFF, fineweb=OFF, near_dedup=OFF)
    return CurateConfig(**{**base, **changes})


def ent(text, part, label, nth=0):
    start = -1
    for _ in range(nth + 1):
        start = text.index(part, start + 1)
    return {"start": start, "end": start + len(part), "label": label}


def record(i, text, entities=None, annotations=None):
    rec = {"id": f"r{i}", "text": text, "source": "file", "url": f"file:///x#L{i}", "meta": {}}
    if entities is not None:
        rec["entities"] = entities
    if annotations is not None:
        rec["annotations"] = annotations
    return rec


T_NEXT = "Contact Anna Smith at anna.smith@acme.com or ACME Corp. in Paris ."
T_COLON = "Write to ACME:info@acme.com or call ACME on +1 415 555 0100 , said Bob Jones ."
T_MULTI = "Mail jo@x.org to Angela Merkel in Berlin ."
T_WS = "  Anna   Smith  visited\tNew  York  today\u00a0."
T_UNI = "Zu\u0308rich and Ca\u00c3\u00a9 Nero are places ."  # a decomposed u-umlaut, then mojibake of e-acute
T_INSIDE = "Orders go to sales@acme-corp.com for ACME ."
T_ACROSS = "Ask John Smith john@smith.org today ."
T_PHONE = "Call Bob on 415-555-0100 today ."
SYNTHETIC = [
    (T_NEXT, [ent(T_NEXT, "Anna Smith", "PER"), ent(T_NEXT, "ACME Corp.", "ORG"), ent(T_NEXT, "Paris", "LOC")]),
    (T_COLON, [ent(T_COLON, "ACME", "ORG"), ent(T_COLON, "ACME", "ORG", 1), ent(T_COLON, "Bob Jones", "PER")]),
    (T_WS, [ent(T_WS, "Anna   Smith", "PER"), ent(T_WS, "New  York", "LOC")]),
    (T_UNI, [ent(T_UNI, "Zu\u0308rich", "LOC"), ent(T_UNI, "Ca\u00c3\u00a9 Nero", "ORG")]),
    (T_INSIDE, [ent(T_INSIDE, "acme-corp", "ORG"), ent(T_INSIDE, "ACME", "ORG")]),  # an entity inside an address
    (T_ACROSS, [ent(T_ACROSS, "John Smith john@smith.org", "PER")]),  # an address inside an entity
    (T_PHONE, [ent(T_PHONE, "Bob", "PER"), ent(T_PHONE, "415-555", "MISC")]),  # an entity cut by a phone number
]


def run_curate(tmp_path, records, config=None):
    src = tmp_path / "records.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "curated"
    m = curate_to(config or cfg(), src, out, home=tmp_path / "home")
    return m, list(read_jsonl(out / "records.jsonl")), list(read_jsonl(out / "rejects.jsonl"))


@needs_conll
def test_every_kept_span_reads_its_entity_after_curation(tmp_path):
    conll = [record(i, text, extra["entities"]) for i, (_, text, extra, _) in
             enumerate(read_conll_rows(conll_subset(tmp_path, 400)))]
    synthetic = [record(1000 + i, t, e) for i, (t, e) in enumerate(SYNTHETIC)]
    multi = record(2000, T_MULTI, annotations=[
        {"annotator": "a", "entities": [ent(T_MULTI, "Angela Merkel", "PER"), ent(T_MULTI, "Berlin", "LOC")]},
        {"annotator": "b", "entities": [ent(T_MULTI, "Angela Merkel", "PER")]}])
    before = {r["id"]: r for r in json.loads(json.dumps(conll + synthetic + [multi]))}
    m, kept, rejects = run_curate(tmp_path, conll + synthetic + [multi])
    by_id = {r["id"]: r for r in kept}
    for rid, rec in by_id.items():
        old = before[rid]
        lists = [rec["entities"]] if "entities" in rec else [a["entities"] for a in rec["annotations"]]
        old_lists = [old["entities"]] if "entities" in old else [a["entities"] for a in old["annotations"]]
        for new_list, old_list in zip(lists, old_lists):
            assert span_problem(rec["text"], new_list) is None
            # what each entity reads: the original entity text, normalised as curate normalises text
            assert entity_texts(rec["text"], new_list) == [normalize_text(t) for t in entity_texts(old["text"], old_list)]
            if rec["text"].isascii() and old["text"] == " ".join(old["text"].split()):
                assert entity_texts(rec["text"], new_list) == entity_texts(old["text"], old_list)  # exactly
    # CoNLL text is already clean: its spans do not move, whatever else curate does
    conll_kept = [r for r in kept if r["id"] in {c["id"] for c in conll}]
    assert conll_kept and all(r["entities"] == before[r["id"]]["entities"] for r in conll_kept)
    # redacted next to an entity: the entity's offsets moved with the text
    nxt = by_id["r1000"]
    assert nxt["text"] == "Contact Anna Smith at <EMAIL> or ACME Corp. in Paris ."
    assert entity_texts(nxt["text"], nxt["entities"]) == ["Anna Smith", "ACME Corp.", "Paris"]
    assert nxt["entities"][1]["start"] != before["r1000"]["entities"][1]["start"]
    colon = by_id["r1001"]
    assert colon["text"] == "Write to ACME:<EMAIL> or call ACME on <PHONE> , said Bob Jones ." and colon["pii"]
    assert entity_texts(colon["text"], colon["entities"]) == ["ACME", "ACME", "Bob Jones"]
    assert entity_texts(by_id["r1002"]["text"], by_id["r1002"]["entities"]) == ["Anna Smith", "New York"]
    assert entity_texts(by_id["r1003"]["text"], by_id["r1003"]["entities"]) == ["Z\u00fcrich", "Ca\u00e9 Nero"]
    assert by_id["r2000"]["text"] == "Mail <EMAIL> to Angela Merkel in Berlin ."
    # a redaction inside or across an entity: rejected with why, as collected (text and spans)
    reasons = {r["id"]: r["reason"] for r in rejects}
    for rid in ("r1004", "r1005", "r1006"):
        assert reasons[rid] == "pii_breaks_entity", reasons
        rej = next(r for r in rejects if r["id"] == rid)
        assert rej["text"] == before[rid]["text"] and rej["entities"] == before[rid]["entities"]
        assert rej["detail"].startswith("[")
    details = {r["id"]: r["detail"] for r in rejects if "detail" in r}
    assert "inside a changed region" in details["r1004"] and "would read something else" in details["r1005"]
    assert "@" not in "".join(details.values())  # the reason never quotes what was redacted
    assert m.drop_reasons["pii_breaks_entity"] == 3


def test_a_duplicate_or_a_short_text_is_rejected_with_its_spans_as_collected(tmp_path):
    first = record(1, "Anna Smith visited New York .", [{"start": 0, "end": 10, "label": "PER"}])
    again = record(2, "Anna   Smith  visited New York .", [{"start": 0, "end": 12, "label": "PER"},
                                                          {"start": 22, "end": 30, "label": "LOC"}])
    short = record(3, "  Bob  ", [{"start": 2, "end": 5, "label": "PER"}])
    m, kept, rejects = run_curate(tmp_path, [first, again, short], cfg(min_chars=5))
    assert [r["id"] for r in kept] == ["r1"]
    dup = next(r for r in rejects if r["id"] == "r2")
    assert dup["reason"] == "exact_duplicate" and dup["text"] == again["text"] and dup["entities"] == again["entities"]
    short_rej = next(r for r in rejects if r["id"] == "r3")
    assert short_rej["reason"] == "too_short" and short_rej["text"] == "  Bob  " and short_rej["entities"] == short["entities"]
    assert not any(k.startswith("_original") for r in kept + rejects for k in r)


def test_an_entity_on_a_dropped_boilerplate_line_rejects_the_record():
    worker = ChunkWorker(cfg(boilerplate=True), [])
    text = "Skip to content\nAnna Smith met Bob ."
    result = worker([record(1, text, [{"start": 0, "end": 4, "label": "ORG"}, ent(text, "Anna Smith", "PER")]),
                     record(2, text, [ent(text, "Anna Smith", "PER")])])
    assert result.reasons[0] == "normalize_breaks_entity" and "removed" in result.records[0]["detail"]
    assert result.reasons[1] is None
    assert result.records[1]["text"] == "Anna Smith met Bob ." and result.records[1]["entities"] == [
        {"start": 0, "end": 10, "label": "PER"}]


def test_records_without_spans_curate_as_before():
    worker = ChunkWorker(cfg(), [])
    rec = {"id": "a", "text": "  mail jo@x.org  now ", "source": "file"}
    result = worker([dict(rec)])
    assert result.reasons == [None]
    assert result.records[0]["text"] == "mail <EMAIL> now" and "entities" not in result.records[0]
    assert set(result.records[0]) == {"id", "text", "source", "sha256", "pii", "_original"}
