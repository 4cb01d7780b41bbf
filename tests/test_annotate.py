from collections import Counter

import pytest

from conftest import write_lines, write_records
from lmchain.stages.annotate import run
from lmchain.artifacts import read_jsonl
from lmchain.config import AnnotateConfig, LabelSource
from lmchain.errors import InputError


def _corpus(tmp_path, n):
    return write_records(tmp_path / "corpus.jsonl",
                         [{"id": f"{i:04d}", "text": f"sentence number {i}", "source": "file"} for i in range(n)])


def test_join_split_and_rejects(ctx, tmp_path):
    corpus = _corpus(tmp_path, 200)
    lines = ["sentence\tlabel"] + [f"sentence  number {i}\t{i % 2}" for i in range(200)]  # extra space: normalised
    lines += ["not in the corpus at all\t1", "sentence number 5\t0", "sentence number 7\t7"]
    labels = write_lines(tmp_path / "labels.tsv", lines)
    cfg = AnnotateConfig(labels=[LabelSource(path=str(labels), text_field="sentence", strict=False)],
                         label_names=["negative", "positive"], test_fraction=0.2, validation_fraction=0.1)
    m = run(cfg, ctx, {"gate": {"outputs": {"records": str(corpus)}}})
    splits = {s: list(read_jsonl(m.outputs[s])) for s in ("train", "validation", "test")}
    ids = [r["id"] for s in splits.values() for r in s]
    assert len(ids) == len(set(ids)) == 199  # 5 has conflicting labels (a tie); 7's second label is unknown
    assert m.drop_reasons == {"not_in_corpus": 1, "conflicting_labels": 1, "unknown_label": 1}
    assert all(r["provenance"] == "human" and r["confidence"] == 1.0 for r in splits["train"])
    (conflict,) = read_jsonl(m.outputs["conflicts"])
    assert conflict["text"] == "sentence number 5" and conflict["resolved"] is None
    test_counts = Counter(r["label"] for r in splits["test"])
    assert min(test_counts.values()) >= 10  # both classes, in proportion up to hashing noise
    assert len(splits["test"]) == pytest.approx(0.2 * 198, abs=14)  # binomial: sd ~5.6
    assert splits["train"][0]["label_name"] in ("negative", "positive")


def test_split_is_deterministic(ctx, tmp_path):
    corpus = _corpus(tmp_path, 60)
    labels = write_lines(tmp_path / "l.tsv", ["sentence\tlabel"] + [f"sentence number {i}\t{i % 2}" for i in range(60)])
    cfg = AnnotateConfig(labels=[LabelSource(path=str(labels), text_field="sentence")], label_names=["a", "b"])
    first = [r["id"] for r in read_jsonl(run(cfg, ctx, {"gate": {"outputs": {"records": str(corpus)}}}).outputs["test"])]
    second = [r["id"] for r in read_jsonl(run(cfg, ctx, {"gate": {"outputs": {"records": str(corpus)}}}).outputs["test"])]
    assert first == second


def test_one_class_or_missing_label_column_is_a_clear_error(ctx, tmp_path):
    corpus = _corpus(tmp_path, 10)
    one = write_lines(tmp_path / "one.tsv", ["sentence\tlabel"] + [f"sentence number {i}\t1" for i in range(10)])
    with pytest.raises(InputError, match="at least two classes"):
        run(AnnotateConfig(labels=[LabelSource(path=str(one), text_field="sentence")]), ctx,
            {"gate": {"outputs": {"records": str(corpus)}}})
    nolabel = write_lines(tmp_path / "nolabel.tsv", ["sentence\tscore", "sentence number 1\t1"])
    with pytest.raises(InputError, match="nolabel.tsv has no label column 'label'"):
        run(AnnotateConfig(labels=[LabelSource(path=str(nolabel), text_field="sentence")]), ctx,
            {"gate": {"outputs": {"records": str(corpus)}}})


def test_a_sentence_keeps_its_split_when_more_data_arrives(ctx, tmp_path):
    """The champion/challenger comparison relies on it: what one run trained on never enters a
    later run's test split."""
    def splits_for(n, name):
        (tmp_path / name).mkdir()
        corpus = _corpus(tmp_path / name, n)
        labels = write_lines(tmp_path / name / "l.tsv",
                             ["sentence\tlabel"] + [f"sentence number {i}\t{i % 2}" for i in range(n)])
        cfg = AnnotateConfig(labels=[LabelSource(path=str(labels), text_field="sentence")], label_names=["a", "b"])
        m = run(cfg, ctx, {"gate": {"outputs": {"records": str(corpus)}}})
        return {r["text"]: s for s in ("train", "validation", "test") for r in read_jsonl(m.outputs[s])}

    small, large = splits_for(300, "small"), splits_for(600, "large")
    assert all(large[text] == split for text, split in small.items())
    assert sum(s == "test" for s in large.values()) > sum(s == "test" for s in small.values())
