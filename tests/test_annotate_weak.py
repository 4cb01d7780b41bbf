"""Semi-automatic labels (LFs, label model, weighted vote), modes, the review queue, leakage."""

import csv
import json

import numpy as np
import pytest

from conftest import write_lines, write_records
from lmchain.stages.annotate import run
from lmchain.stages import review_queue
from lmchain.annotate.active import entropy, margin_uncertainty, select, write_queue
from lmchain.annotate.lfs import (ABSTAIN, apply_lfs, build_lfs, keyword_lf, label_model, model_lf, vader_lf,
                                  weak_labels, weighted_vote)
from lmchain.annotate.splits import LeakageError, check_leakage, split_of
from lmchain.artifacts import read_jsonl
from lmchain.config import ActiveConfig, AnnotateConfig, LabelSource, WeakLabelConfig
from lmchain.errors import ConfigError, InputError

NAMES = ["negative", "positive"]
POS = ["a great and wonderful film", "superb acting, a delightful story", "an excellent, moving drama",
       "the best comedy of the year", "charming and funny", "a beautiful, touching tale"]
NEG = ["a boring, dull mess", "the worst film i have seen", "tedious and awful", "a stupid waste of time",
       "terrible acting and a bad script", "pointless and predictable"]


def test_lfs_vote_or_abstain_and_vader_reads_sentiment():
    lfs = [vader_lf(0, 1), keyword_lf(1, ["great", "superb"], "kw+"), keyword_lf(0, ["dull", "worst"], "kw-")]
    votes, conf = apply_lfs(lfs, ["a great film", "a dull, boring film", "the film starts at nine"])
    assert votes.tolist() == [[1, 1, ABSTAIN], [0, ABSTAIN, 0], [ABSTAIN, ABSTAIN, ABSTAIN]]
    assert conf[0, 0] > 0.05 and conf[2, 0] < 0.05  # VADER's |compound| as its confidence
    assert keyword_lf(1, ["great"], "k").apply(["ungreatful"])[0].tolist() == [ABSTAIN]  # whole words only


def test_label_model_and_weighted_vote_combine_votes():
    # Three LFs on 6 rows: lf0 always right, lf1 right on 2 of 3 votes, lf2 always wrong where it votes.
    truth = np.array([1, 1, 1, 0, 0, 0])
    votes = np.array([[1, 1, 0], [1, 0, 0], [1, 1, ABSTAIN], [0, 0, 1], [0, 1, 1], [0, ABSTAIN, 1]])
    gold = {i: int(t) for i, t in enumerate(truth)}
    probs = weighted_vote(votes, 2, [1.0, 0.67, 0.0])
    assert (probs.argmax(1) == truth).all()
    anchored = label_model(votes, 2, gold={0: 1, 3: 0})
    assert (anchored.argmax(1) == truth).all() and anchored[1, 1] > 0.5
    # A row no LF voted on gets the class prior, not a made-up certainty.
    assert label_model(np.array([[1], [ABSTAIN]]), 2)[1].max() < 0.9
    _, _, report = weak_labels([keyword_lf(1, ["a"], "kw")], ["a b", "c"], 2, "label_model", {0: 1})
    assert report["kw"] == {"kind": "rule", "coverage": 0.5, "gold_votes": 1, "accuracy": 1.0}


def test_model_prelabels_carry_confidence_and_abstain_below_threshold():
    def predict(texts):  # what Predictor.predict returns
        return [{"label_id": 1, "label": "positive", "scores": {"negative": 0.3, "positive": 0.7}},
                {"label_id": 0, "label": "negative", "scores": {"negative": 0.55, "positive": 0.45}}][: len(texts)]

    labels, conf = model_lf(predict, min_confidence=0.6).apply(["x", "y"])
    assert labels.tolist() == [1, ABSTAIN] and conf.tolist() == [0.7, 0.55]
    lfs = build_lfs(WeakLabelConfig(vader=True, keywords={"positive": ["great"]}), NAMES, predict)
    assert [(lf.name, lf.kind) for lf in lfs] == [("vader", "rule"), ("keywords:positive", "rule"),
                                                 ("champion", "model")]
    with pytest.raises(ConfigError, match=r"annotate.weak.keywords.*'neutral' is not one of"):
        build_lfs(WeakLabelConfig(keywords={"neutral": ["meh"]}), NAMES)


def _corpus(tmp_path, texts):
    return str(write_records(tmp_path / "corpus.jsonl",
                             [{"id": f"{i:04d}", "text": t, "source": "file"} for i, t in enumerate(texts)]))


def _many(n):
    """n positive and n negative texts, distinct, each with one sentiment keyword."""
    return ([f"{POS[i % len(POS)]} number {i}" for i in range(n)],
            [f"{NEG[i % len(NEG)]} number {i}" for i in range(n)])


SENTIMENT = WeakLabelConfig(vader=True, keywords={"positive": ["great", "superb", "excellent", "best", "charming"],
                                                  "negative": ["boring", "worst", "tedious", "stupid", "terrible"]},
                            champion=False, min_confidence=0.6)


@pytest.mark.parametrize("mode", ["human", "mixed", "semi"])
def test_modes_weak_labels_only_in_train_with_provenance(ctx, tmp_path, mode):
    pos, neg = _many(150)
    corpus = _corpus(tmp_path, pos + neg)
    # People labelled a third of the texts; the rest of the corpus is unlabelled.
    labelled = [(t, 1) for t in pos[:50]] + [(t, 0) for t in neg[:50]]
    labels = write_lines(tmp_path / "l.tsv", ["text\tlabel"] + [f"{t}\t{y}" for t, y in labelled])
    cfg = AnnotateConfig(labels=[LabelSource(path=str(labels))], label_names=NAMES, mode=mode, weak=SENTIMENT,
                         test_fraction=0.2, validation_fraction=0.1)
    m = run(cfg, ctx, {"gate": {"outputs": {"records": corpus}}})
    splits = {s: list(read_jsonl(m.outputs[s])) for s in ("train", "validation", "test")}
    for s in ("validation", "test"):  # scored on people's labels only, in every mode
        assert splits[s] and all(r["provenance"] == "human" for r in splits[s])
    train_prov = {r["provenance"] for r in splits["train"]}
    if mode == "human":
        assert train_prov == {"human"} and m.counts["weak_labels"] == 0
    else:
        weak = [r for r in splits["train"] if r["provenance"] != "human"]
        assert weak and {r["provenance"] for r in weak} <= {"rule"}
        assert all(0.6 <= r["confidence"] <= 1 and r["votes"] for r in weak)
        truth = {t: 1 for t in pos} | {t: 0 for t in neg}
        assert np.mean([r["label"] == truth[r["text"]] for r in weak]) > 0.9
        assert ("human" in train_prov) == (mode == "mixed")
        assert m.info["weak"]["labelling_functions"]["vader"]["accuracy"] > 0.8
    # The split of every text is the one its hash gives, whoever labelled it.
    assert all(split_of(r["text"], cfg) == s for s, rows in splits.items() for r in rows)


def test_semi_mode_without_any_labelling_function_is_a_clear_error(ctx, tmp_path):
    pos, neg = _many(20)
    labels = write_lines(tmp_path / "l.tsv", ["text\tlabel"] + [f"{t}\t1" for t in pos] + [f"{t}\t0" for t in neg])
    cfg = AnnotateConfig(labels=[LabelSource(path=str(labels))], label_names=NAMES, mode="semi",
                         weak=WeakLabelConfig(champion=False))
    with pytest.raises(InputError, match="no labelling function"):
        run(cfg, ctx, {"gate": {"outputs": {"records": _corpus(tmp_path, pos + neg)}}})


def test_active_selection_picks_the_most_uncertain():
    probs = np.array([[0.99, 0.01], [0.5, 0.5], [0.8, 0.2], [0.45, 0.55], [0.3, 0.7]])
    assert select(probs, 3, "entropy") == [1, 3, 4]
    assert select(probs, 3, "margin") == [1, 3, 4]
    assert entropy(probs)[1] == pytest.approx(np.log(2)) and margin_uncertainty(probs)[1] == 1.0
    three = np.array([[0.4, 0.35, 0.25], [0.5, 0.47, 0.03], [0.34, 0.33, 0.33]])
    assert select(three, 1, "entropy") == [2] and select(three, 2, "margin") == [2, 1]
    # Diversity: the second-most uncertain text is a copy of the first; the queue skips it.
    texts = ["the plot is thin", "the plot is thin", "a different sentence entirely", "sure", "fine"]
    p = np.array([[0.5, 0.5], [0.51, 0.49], [0.6, 0.4], [0.9, 0.1], [0.95, 0.05]])
    assert select(p, 2, "entropy", texts=texts) == [0, 1]
    assert select(p, 2, "entropy", texts=texts, diversity=1.0) == [0, 2]
    assert sorted(select(None, 3, "random", texts=texts, seed=1)) == sorted(set(select(None, 3, "random",
                                                                                         texts=texts, seed=1)))


def test_queue_formats(tmp_path):
    items = [{"id": "7", "text": "is it good?", "suggested_label": "positive", "confidence": 0.52,
              "uncertainty": 0.69, "scorer": "models:/m/3"}]
    write_queue(items, tmp_path / "q.jsonl", "jsonl", NAMES)
    assert json.loads((tmp_path / "q.jsonl").read_text()) == items[0]
    write_queue(items, tmp_path / "q.csv", "csv", NAMES)
    (row,) = csv.DictReader(open(tmp_path / "q.csv"))
    assert row["text"] == "is it good?" and row["label"] == "" and row["suggested_label"] == "positive"
    write_queue(items, tmp_path / "q.json", "label-studio", NAMES, from_name="sentiment")
    (task,) = json.loads((tmp_path / "q.json").read_text())
    assert task["data"] == {"text": "is it good?", "lmchain_id": "7"}
    assert task["predictions"][0]["result"][0]["value"] == {"choices": ["positive"]}


def test_review_queue_and_returned_labels_merge_on_the_next_run(ctx, tmp_path):
    pos, neg = _many(60)
    corpus = _corpus(tmp_path, pos + neg)
    labels = write_lines(tmp_path / "l.tsv", ["text\tlabel"] + [f"{t}\t1" for t in pos[:20]] +
                         [f"{t}\t0" for t in neg[:20]])
    returned = tmp_path / "returned"
    cfg = AnnotateConfig(labels=[LabelSource(path=str(labels))], label_names=NAMES, mode="mixed", weak=SENTIMENT,
                         active=ActiveConfig(k=10, format="csv", queue_dir=str(tmp_path / "queue"),
                                             returned_dir=str(returned)))
    gate = {"gate": {"outputs": {"records": corpus}}}
    first = run(cfg, ctx, gate)
    q = review_queue.run(cfg, ctx, {"annotate": first.to_dict()})
    assert q.counts["queue"] == 10 and q.info["scorer"] == "label_model"  # no champion yet: the label model
    rows = list(csv.DictReader(open(q.info["published"], encoding="utf-8")))
    unlabelled = {r["text"] for r in read_jsonl(first.outputs["unlabelled"])}
    assert len(rows) == 10 and all(r["text"] in unlabelled for r in rows)
    # A reviewer labels 6 of them (against the suggestion where it was wrong) and returns the file.
    truth = {t: "positive" for t in pos} | {t: "negative" for t in neg}
    for r in rows[:6]:
        r["label"] = truth[r["text"]]
    returned.mkdir()
    with open(returned / "review1.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    second = run(cfg, ctx, gate)
    by_text = {r["text"]: r for s in ("train", "validation", "test") for r in read_jsonl(second.outputs[s])}
    for r in rows[:6]:
        assert by_text[r["text"]]["provenance"] == "human" and by_text[r["text"]]["label_name"] == truth[r["text"]]
    assert second.counts["human_labels"] == first.counts["human_labels"] + 6
    assert second.drop_reasons["missing_label"] == 4  # the 4 left blank are kept as rejects, not errors
    assert {r["text"] for r in read_jsonl(second.outputs["unlabelled"])} == unlabelled - {r["text"] for r in rows[:6]}


def test_leakage_check_catches_a_text_in_two_splits():
    ok = {"train": [{"id": "1", "text": "Hello world"}], "test": [{"id": "2", "text": "another one"}]}
    check_leakage(ok)
    leaky = {"train": [{"id": "1", "text": "Hello world"}], "validation": [],
             "test": [{"id": "2", "text": "hello, WORLD!"}]}  # the same sentence up to case and punctuation
    with pytest.raises(LeakageError, match=r"'hello, WORLD!' \(id 2\) is in both 'train' and 'test'"):
        check_leakage(leaky)


def test_without_a_champion_prelabels_are_skipped_with_the_reason(ctx):
    from lmchain.annotate.champion import champion_predict

    ctx.model_name = "lmchain-annotate-test-no-such-model"
    predict, info = champion_predict(ctx)  # a real (empty) MLflow registry under the test home
    assert predict is None and info == {"champion": None,
                                        "reason": "no champion of lmchain-annotate-test-no-such-model yet"}
