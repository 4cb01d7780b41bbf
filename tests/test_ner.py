"""Token classification: CoNLL reading, BIO spans and entity F1, and a tiny BERT tagger trained on
the fixture through the real fine-tune job (DeepSpeed, a CPU rank) that then tags new sentences."""

import subprocess
from pathlib import Path

import pytest

from conftest import lmchain_cmd
from lmchain.config import FinetuneConfig
from lmchain.errors import InputError
from lmchain.train import models
from lmchain.train.ner import Tagger, f1_from_counts, read_conll, span_counts, spans, tag_names, train_tagger

FIXTURE = Path(__file__).parent / "fixtures" / "ner"


def test_conll_reading_and_tag_set():
    train = read_conll(FIXTURE / "train.conll")
    assert len(train) == 80 and all(len(s["tokens"]) == len(s["tags"]) for s in train)
    assert tag_names(train) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_bad_conll_lines_are_named(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("alice B-PER\nlives\n")
    with pytest.raises(InputError, match="line 2"):
        read_conll(bad)
    bad.write_text("alice PERSON\n")
    with pytest.raises(InputError, match="line 1: tag 'PERSON' is not BIO"):
        read_conll(bad)
    bad.write_text("\n\n")
    with pytest.raises(InputError, match="no sentences"):
        read_conll(bad)


def test_spans_and_entity_f1_by_hand():
    assert spans(["B-PER", "O", "B-LOC", "I-LOC", "O"]) == {("PER", 0, 1), ("LOC", 2, 4)}
    assert spans(["I-ORG", "I-ORG", "B-ORG"]) == {("ORG", 0, 2), ("ORG", 2, 3)}  # conlleval: I- starts a span
    names = ["O", "B-LOC", "I-LOC", "B-PER"]
    gold = [[-100, 3, 0, 1, 2, -100]]  # [CLS] bob in new york [SEP]
    pred = [[0, 3, 0, 1, 0, 0]]  # the LOC span is cut short: wrong
    counts = span_counts(gold, pred, names)
    assert counts == [1, 2, 2, 3, 4]
    f1, acc = f1_from_counts(counts)
    assert f1 == pytest.approx(0.5) and acc == pytest.approx(0.75)


def test_tiny_tagger_learns_the_fixture_and_tags_new_sentences(tmp_path):
    cfg = FinetuneConfig(base_model="tiny-bert", ranks=1, batch_size=8, learning_rate=3e-3, epochs=12,
                         eval_every=20, patience=0, warmup_ratio=0.1, max_length=32)
    metrics = train_tagger(cfg, models.resolve("tiny-bert"), FIXTURE / "train.conll", FIXTURE / "dev.conll",
                           tmp_path / "model", tmp_path / "job")
    # Entity-level F1 on the dev file, from the best validation checkpoint the job restored.
    assert metrics["best_macro_f1"] > 0.9, metrics.get("validation_curve")
    assert metrics["best_step"] == max(metrics["validation_curve"], key=lambda c: (c[1], -c[0]))[0]
    tagger = Tagger(tmp_path / "model")
    assert tagger.tag([["yesterday", "bob", "visited", "new", "york", "with", "emma", "."]]) == [
        ["O", "B-PER", "O", "B-LOC", "I-LOC", "O", "B-PER", "O"]]
    # The CLI tags with the same model.
    out = subprocess.run(lmchain_cmd("ner", "--model", str(tmp_path / "model"), "--text", "grace lives in rome ."),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "grace/B-PER lives/O in/O rome/B-LOC ./O"
