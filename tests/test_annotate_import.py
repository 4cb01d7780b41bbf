"""Human labels: file formats, Label Studio round trip, label mapping, bad files, aggregation."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_lines, write_records
from lmchain.stages.annotate import run
from lmchain.annotate.aggregate import agreement, cohen_kappa, dawid_skene, fleiss_kappa, majority_vote
from lmchain.annotate.importers import read_votes, write_label_studio_export
from lmchain.artifacts import read_jsonl
from lmchain.config import AnnotateConfig, LabelSource
from lmchain.errors import InputError

FIXTURE = Path(__file__).parent / "fixtures" / "label_studio_export.json"
NAMES = ["negative", "positive"]
LS_MAP = {"Positive": "positive", "Negative": "negative"}


def _ls_source(path=FIXTURE, **kw):
    return LabelSource(path=str(path), label_map=LS_MAP, **kw)


def test_label_studio_export_round_trips(tmp_path):
    votes, rejects, files = read_votes(_ls_source(), NAMES)
    assert rejects == [] and files == [str(FIXTURE.resolve())]
    got = [(v.text, NAMES[v.label], v.annotator) for v in votes]
    assert got == [("A gripping, beautifully acted film.", "positive", "1"),
                   ("A gripping, beautifully acted film.", "positive", "2"),
                   ("Dull and far too long.", "negative", "ann@example.org"),  # the cancelled one is skipped
                   ("The plot is thin but the actors are charming.", "positive", "1"),
                   ("The plot is thin but the actors are charming.", "negative", "2"),
                   ("The plot is thin but the actors are charming.", "positive", "3"),
                   ("A tedious mess.", "negative", "2")]
    # Back out as a Label Studio export (label names as Label Studio shows them) and in again.
    inverse = {v: k for k, v in LS_MAP.items()}
    out = write_label_studio_export([{"text": t, "label": inverse[label], "annotator": a} for t, label, a in got],
                                    tmp_path / "export.json", from_name="sentiment")
    again, _, _ = read_votes(_ls_source(out), NAMES)
    assert [(v.text, NAMES[v.label], v.annotator) for v in again] == got
    tasks = json.loads(out.read_text())
    assert len(tasks) == 4 and tasks[2]["annotations"][1]["result"][0]["value"] == {"choices": ["Negative"]}


def test_csv_tsv_jsonl_and_label_studio_min_read_the_same_labels(tmp_path):
    rows = [("good fun", "POS"), ("a slog", "NEGATIVE"), ("fine work", "1")]
    csv_file = write_lines(tmp_path / "l.csv", ["text,label"] + [f'"{t}",{lab}' for t, lab in rows])
    tsv_file = write_lines(tmp_path / "l.tsv", ["text\tlabel"] + [f"{t}\t{lab}" for t, lab in rows])
    jsonl_file = write_records(tmp_path / "l.jsonl", [{"text": t, "label": lab} for t, lab in rows])
    ls_min = tmp_path / "min.json"
    ls_min.write_text(json.dumps([{"id": i, "text": t, "label": lab} for i, (t, lab) in enumerate(rows)]))
    expected = [("good fun", 1), ("a slog", 0), ("fine work", 1)]  # POS mapped; names in any case; "1" an id
    for path in (csv_file, tsv_file, jsonl_file, ls_min):
        votes, _, _ = read_votes(LabelSource(path=str(path), label_map={"pos": "positive"}), NAMES)
        assert [(v.text, v.label) for v in votes] == expected, path


@pytest.mark.parametrize("name,lines,message", [
    ("unknown.tsv", ["text\tlabel", "good\tpositive", "bad\tmeh"], r"unknown\.tsv#row3: unknown_label: 'meh'"),
    ("nolabel.tsv", ["text\tscore", "good\t1"], r"nolabel\.tsv has no label column 'label'"),
    ("notext.csv", ["sentence,label", "good,1"], r"notext\.csv has no column 'text'"),
    ("empty.jsonl", ['{"text": "good", "label": "positive"}', '{"text": "  ", "label": "negative"}'],
     r"empty\.jsonl#row2: empty text"),
    ("nolabel.jsonl", ['{"text": "good", "label": "positive"}', '{"text": "bad"}'],
     r"nolabel\.jsonl#row2: missing_label"),
])
def test_bad_label_files_name_the_row(tmp_path, name, lines, message):
    path = write_lines(tmp_path / name, lines)
    with pytest.raises(InputError, match=message):
        read_votes(LabelSource(path=str(path)), NAMES)


def test_bad_label_studio_task_is_named_and_lenient_sources_keep_rejects(tmp_path):
    tasks = json.loads(FIXTURE.read_text())
    tasks[1]["annotations"][0]["result"][0]["value"]["choices"] = ["Neutral"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    with pytest.raises(InputError, match=r"bad\.json#task2\(id=102\): unknown_label: 'Neutral'"):
        read_votes(_ls_source(bad), NAMES)
    votes, rejects, _ = read_votes(_ls_source(bad, strict=False), NAMES)
    assert len(votes) == 6 and rejects[0]["reason"].startswith("unknown_label") and "task2" in rejects[0]["where"]


def test_kappa_on_known_values():
    # Cohen: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4 (the textbook example).
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0
    # Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.2099, abs=1e-4)
    # Two raters: Fleiss' kappa is close to Cohen's (Scott's pi), and agreement() reports both.
    votes = [(i, "a", x) for i, x in enumerate(a)] + [(i, "b", y) for i, y in enumerate(b)]
    report = agreement(votes, 2)
    assert report["cohen_kappa"] == {"a|b": 0.4} and 0.35 < report["fleiss_kappa"] < 0.4


def test_dawid_skene_recovers_a_noisy_annotator():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    accuracy = {"expert": 0.95, "good": 0.85, "noisy1": 0.55, "noisy2": 0.55, "noisy3": 0.55}
    votes = [(i, who, int(t if rng.random() < acc else 1 - t)) for i, t in enumerate(truth)
             for who, acc in accuracy.items()]
    items, post, confusion, _ = dawid_skene(votes, 2)
    ds = np.array([int(post[items.index(i)].argmax()) for i in range(len(truth))])
    mv = np.array([majority_vote([v[2] for v in votes if v[0] == i])[0] for i in range(len(truth))])
    assert (ds == truth).mean() > (mv == truth).mean() + 0.03  # weighing voters beats counting them
    assert (ds == truth).mean() > 0.93
    for who, acc in accuracy.items():  # each annotator's accuracy is recovered from the votes alone
        assert np.diag(confusion[who]).mean() == pytest.approx(acc, abs=0.06), who


def _corpus(tmp_path, texts):
    return write_records(tmp_path / "corpus.jsonl",
                         [{"id": f"{i:04d}", "text": t, "source": "file"} for i, t in enumerate(texts)])


def test_stage_aggregates_several_annotators_and_flags_conflicts(ctx, tmp_path):
    texts = [f"sentence number {i}" for i in range(60)]
    corpus = _corpus(tmp_path, texts)
    lines = ["text\tlabel\tannotator"]
    for i, t in enumerate(texts):
        truth = i % 2
        lines += [f"{t}\t{truth}\tann1", f"{t}\t{truth}\tann2", f"{t}\t{truth if i % 10 else 1 - truth}\tann3"]
    labels = write_lines(tmp_path / "votes.tsv", lines)
    for method in ("majority", "dawid_skene"):
        cfg = AnnotateConfig(labels=[LabelSource(path=str(labels), annotator_field="annotator")],
                             label_names=NAMES, aggregate=method)
        m = run(cfg, ctx, {"gate": {"outputs": {"records": str(corpus)}}})
        rows = [r for s in ("train", "validation", "test") for r in read_jsonl(m.outputs[s])]
        assert len(rows) == 60 and all(r["label"] == int(r["text"].split()[-1]) % 2 for r in rows)
        conflicts = list(read_jsonl(m.outputs["conflicts"]))
        assert len(conflicts) == 6 and all(c["resolved"] is not None for c in conflicts)  # 2:1, kept
        outvoted = [r for r in rows if int(r["text"].split()[-1]) % 10 == 0]
        # Majority: 2 of 3 votes. Dawid-Skene: ann1 and ann2 never err, so their agreement is near-certain.
        assert all(r["confidence"] == (pytest.approx(2 / 3, abs=1e-3) if method == "majority" else
                                       pytest.approx(1.0, abs=0.02)) for r in outvoted)
        agreement_report = json.loads(Path(m.outputs["agreement"]).read_text())
        assert agreement_report["annotators"] == 3 and agreement_report["cohen_kappa"]["ann1|ann2"] == 1.0
        assert 0.5 < agreement_report["fleiss_kappa"] < 1.0


def test_a_feedback_correction_wins_and_keeps_its_provenance(ctx, tmp_path):
    texts = [f"sentence number {i}" for i in range(40)]
    corpus = _corpus(tmp_path, texts)
    original = write_lines(tmp_path / "orig.tsv", ["text\tlabel"] + [f"{t}\t{i % 2}" for i, t in enumerate(texts)])
    fixed = write_records(tmp_path / "feedback.jsonl", [{"text": texts[3], "label": "negative"}])
    cfg = AnnotateConfig(labels=[LabelSource(path=str(original)),
                                 LabelSource(path=str(fixed), precedence=1, provenance="feedback")], label_names=NAMES)
    m = run(cfg, ctx, {"gate": {"outputs": {"records": str(corpus)}}})
    rows = {r["text"]: r for s in ("train", "validation", "test") for r in read_jsonl(m.outputs[s])}
    assert rows[texts[3]]["label_name"] == "negative" and rows[texts[3]]["provenance"] == "feedback"
    assert rows[texts[2]]["provenance"] == "human" and list(read_jsonl(m.outputs["conflicts"])) == []
