"""A task: ner recipe (configs/conll.yaml) through the stages it has so far, on a real CoNLL
subset plus span JSONL, a Label Studio export and unlabelled text: collect -> curate -> gate ->
annotate -> review_queue -> gate_labels. Every entity in the splits reads what it read in its
source; a batch whose types are out of balance stops at gate_labels, quarantined."""

import json

import pytest
from conftest import needs_conll
from test_ner_sources import conll_subset, label_studio_export

from lmchain.artifacts import read_jsonl
from lmchain.config import load_config
from lmchain.errors import GateFailed
from lmchain.quality.gate import quarantine_dir
from lmchain.sources.spans import read_conll_rows
from lmchain.stages.runner import run_all
from lmchain.text_spans import entity_texts

pytestmark = needs_conll
STAGES = ("collect", "curate", "gate", "annotate", "review_queue", "gate_labels")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCHAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


def sources(tmp_path):
    conll = conll_subset(tmp_path, 400)
    text = "Write to Anna Smith at anna@acme.org or visit ACME in Paris ."
    inside = "Orders go to sales@acme-corp.com for ACME ."
    spans = tmp_path / "spans.jsonl"
    spans.write_text("".join(json.dumps(r) + "\n" for r in [
        {"text": text, "entities": [{"start": 9, "end": 19, "label": "PER"}, {"start": 46, "end": 50, "label": "ORG"},
                                    {"start": 54, "end": 59, "label": "LOC"}]},
        {"text": inside, "entities": [{"start": 19, "end": 28, "label": "ORG"}]},  # inside the address
    ]), encoding="utf-8")
    plain = tmp_path / "plain.txt"
    plain.write_text("Some unlabelled news about the markets today .\nAnother line without spans .\n")
    return [{"path": str(conll), "format": "conll"}, {"path": str(spans), "format": "spans"},
            {"path": str(label_studio_export(tmp_path)), "format": "label-studio"}, {"path": str(plain)}]


def recipe(tmp_path, *extra):
    return load_config("conll", [f"collect.files={json.dumps(sources(tmp_path))}", "gate.curated.min_rows=50",
                                 "gate.labelled.min_rows=50", "annotate.active.k=2", *extra])


def test_a_ner_recipe_runs_to_gate_labels_with_spans_intact(tmp_path, home):
    cfg = recipe(tmp_path)
    done = run_all(cfg, "ner-chain", STAGES, lmchain_home=home)
    assert done["gate"]["info"]["passed"] and done["gate_labels"]["info"]["passed"]
    collect = done["collect"]
    assert collect["counts"]["records"] == 400 + 2 + 3 + 2 and collect["drop_reasons"]["several_labels"] == 1
    assert done["curate"]["drop_reasons"]["pii_breaks_entity"] == 1
    ann = done["annotate"]
    assert ann["info"]["task"] == "ner" and ann["counts"]["unlabelled"] >= 3
    labels = json.loads(open(ann["outputs"]["labels"]).read())
    assert labels["task"] == "ner" and labels["names"] == ["PER", "ORG", "LOC", "MISC"]
    # what each entity read in its source (collect's record of the same id)
    collected = {r["id"]: r for r in read_jsonl(collect["outputs"]["records"])}
    gated = done["gate_labels"]["outputs"]
    examples = [e for s in ("train", "validation", "test") for e in read_jsonl(gated[s])]
    assert len(examples) > 300
    changed = 0
    for ex in examples:
        src = collected[ex["id"]]
        if "entities" in src:
            assert entity_texts(ex["text"], ex["entities"]) == entity_texts(src["text"], src["entities"])
            changed += ex["text"] != src["text"]
    assert changed >= 2  # redacted sentences (a newsroom's phone, the e-mail) whose spans moved
    conll = {t for _, t, _, _ in read_conll_rows(tmp_path / "train.txt")}
    assert sum(e["text"] in conll for e in examples) > 300
    redacted = next(e for e in examples if "<EMAIL>" in e["text"])
    assert redacted["entities"][0]["start"] == 9 and redacted["entities"][1]["start"] == 40  # moved with the text
    rome = next(e for e in examples if e.get("annotators"))
    assert entity_texts(rome["text"], rome["entities"]) == ["Rome"] and rome["annotators"] == ["label-studio"]
    # the two annotators of the Merkel task split on Macron (one of two): a tie, dropped as conflicting
    assert ann["drop_reasons"]["conflicting_spans"] == 1
    checks = json.loads(open(done["gate_labels"]["outputs"]["gate_result"]).read())["labelled"]["checks"]
    assert "expect_column_pair_values_to_be_valid_spans" in {c["expectation"] for c in checks}
    assert done["review_queue"]["counts"]["queue"] == 2 and done["review_queue"]["info"]["strategy"] == "random"


def test_a_type_without_enough_entities_stops_the_ner_run_at_gate_labels(tmp_path, home):
    cfg = recipe(tmp_path, "annotate.entity_types=[PER, ORG, LOC, MISC, DATE]")
    with pytest.raises(GateFailed, match="expect_column_entity_type_share_to_be_at_least"):
        run_all(cfg, "ner-blocked", STAGES, lmchain_home=home)
    qdir = quarantine_dir(home, "ner-blocked", "labelled")
    assert (qdir / "train.jsonl").is_file() and (qdir / "batch.json").is_file()
