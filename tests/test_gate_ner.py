"""The labelled suite for task: ner: a batch with invalid spans, an unknown entity type, a type
below its share or a sentence in two splits is blocked, named and quarantined intact; a clean
CoNLL batch passes, and its reference never stands in for a classifier's."""

import copy
import json

import pytest
from conftest import needs_conll
from test_ner_sources import conll_subset

from lmchain.annotate.splits import split_of
from lmchain.artifacts import RunContext, sha256_file
from lmchain.config import AnnotateConfig, CurateConfig, GateConfig, SuiteConfig
from lmchain.curate.pipeline import ChunkWorker
from lmchain.errors import GateFailed
from lmchain.quality.batches import labelled_frame
from lmchain.quality.checks import check
from lmchain.quality.gate import quarantine_dir, reference_path
from lmchain.sources.spans import read_conll_rows

pytestmark = needs_conll
TYPES = ["PER", "ORG", "LOC", "MISC"]
OFF = ("language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "near_dedup")
CFG = GateConfig(labelled=SuiteConfig(min_rows=50, min_language_share=0.5, max_duplicate_rate=0.1))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """~300 distinct CoNLL-2003 train sentences with their spans, curated (newsroom phone numbers
    redacted, the spans moved with them) and split as annotate splits them."""
    rows = read_conll_rows(conll_subset(tmp_path_factory.mktemp("conll"), 320))
    records = [{"id": f"c{i}", "text": text, "entities": extra["entities"], "source": "file"}
               for i, (_, text, extra, _) in enumerate(rows)]
    result = ChunkWorker(CurateConfig(workers=1, min_chars=1, min_words=1, **{k: {"enabled": False} for k in OFF}), [])(
        records)
    out, seen = [], set()
    for rec, why in zip(result.records, result.reasons):
        if why is None and rec["text"] not in seen:
            seen.add(rec["text"])
            split = split_of(rec["text"], AnnotateConfig(entity_types=TYPES))
            out.append({k: rec[k] for k in ("id", "text", "entities", "source")} | {"split": split})
    assert any("pii" in rec for rec in result.records)  # the subset holds a newsroom's phone number
    return out


def gate(tmp_path, ctx, rows, cfg=CFG):
    files = {}
    for split in ("train", "validation", "test"):
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "split"}) + "\n"
                                for r in rows if r["split"] == split))
        files[split] = path
    batch = {"labelled": (labelled_frame(files), list(files.values()))}
    return check(ctx, "gate_labels", cfg, batch, TYPES, {}, task="ner"), files


def first(rows, split="train", with_entities=True):
    return next(r for r in rows if r["split"] == split and (r["entities"] or not with_entities))


def overlapping(rows):
    r = first(rows)
    e = r["entities"][0]
    r["entities"].append({"start": e["start"], "end": min(e["end"] + 2, len(r["text"])), "label": "MISC"})


def outside(rows):
    r = first(rows, "test")
    r["entities"].append({"start": len(r["text"]) - 1, "end": len(r["text"]) + 5, "label": "PER"})


def unknown(rows):
    first(rows, "validation")["entities"][0]["label"] = "PERSON"


def no_misc(rows):
    for r in rows:
        r["entities"] = [e for e in r["entities"] if e["label"] != "MISC"]


def leaked(rows):
    test = [r for r in rows if r["split"] == "test"][:3]
    train = [r for r in rows if r["split"] == "train"][:3]
    for t, src in zip(test, train):
        t["text"], t["entities"] = src["text"], copy.deepcopy(src["entities"])


CORRUPTED = {
    "overlapping spans": (overlapping, "expect_column_pair_values_to_be_valid_spans"),
    "span outside its text": (outside, "expect_column_pair_values_to_be_valid_spans"),
    "unknown entity type": (unknown, "expect_column_entity_labels_to_be_in_set"),
    "a type below its share": (no_misc, "expect_column_entity_type_share_to_be_at_least"),
    "a sentence in two splits": (leaked, "expect_no_text_overlap_between_splits"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTED))
def test_bad_span_batch_is_blocked_and_quarantined_intact(tmp_path, clean, case):
    corrupt, expectation = CORRUPTED[case]
    rows = copy.deepcopy(clean)
    corrupt(rows)
    ctx = RunContext(f"ner-{case.replace(' ', '-')}", home=tmp_path / "home")
    with pytest.raises(GateFailed) as exc:
        gate(tmp_path, ctx, rows)
    message = str(exc.value)
    assert "suite 'labelled' failed" in message and expectation in message
    qdir = quarantine_dir(ctx.home, ctx.run_id, "labelled")
    for split in ("train", "validation", "test"):  # intact copies; the originals stay
        assert sha256_file(qdir / f"{split}.jsonl") == sha256_file(tmp_path / f"{split}.jsonl")
    validation = json.loads((qdir / "validation.json").read_text())
    failed = [c["expectation"] for c in validation["checks"] if not c["success"]]
    assert expectation in failed
    assert json.loads((qdir / "batch.json").read_text())["rows"] == len(rows)
    if expectation != "expect_column_entity_type_share_to_be_at_least":  # a row to blame: it is named
        held = [json.loads(line) for line in (qdir / "failing_rows.jsonl").read_text().splitlines()]
        assert held and all(expectation in h["reasons"] for h in held)
    manifest = json.loads((ctx.stage_dir("gate_labels") / "manifest.json").read_text())
    assert manifest["status"] == "blocked" and manifest["info"]["quarantine"]["labelled"] == str(qdir)


def test_a_clean_conll_batch_passes(tmp_path, clean):
    ctx = RunContext("ner-clean", home=tmp_path / "home")
    m, _ = gate(tmp_path, ctx, clean)
    assert m.info["passed"] and m.counts["failed"] == 0 and not m.info["quarantine"]
    checks = json.loads(open(m.outputs["gate_result"]).read())["labelled"]["checks"]
    names = {c["expectation"] for c in checks}
    assert {"expect_column_pair_values_to_be_valid_spans", "expect_column_entity_labels_to_be_in_set",
            "expect_column_entity_type_share_to_be_at_least", "expect_no_text_overlap_between_splits"} <= names
    assert "expect_column_values_to_be_in_set" not in names  # no classification label column here
    share = next(c for c in checks if c["expectation"] == "expect_column_entity_type_share_to_be_at_least")
    assert 0.1 < share["observed"] < 0.25  # MISC, the rarest type
    # the accepted distributions are kept apart from a classifier's labelled reference
    assert reference_path(ctx.home, "labelled", "ner").is_file() and not reference_path(ctx.home, "labelled").exists()
    assert set(json.loads(reference_path(ctx.home, "labelled", "ner").read_text())["entity_type"]) == set(TYPES)
