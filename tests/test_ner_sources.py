"""Reading labelled text for task: ner (CoNLL, JSONL with spans, Label Studio exports) through
collect: spans land on the records, every bad row is a reject with its reason and its text."""

import json
from pathlib import Path

import pytest
from conftest import conll_dir, needs_conll

from lmchain.artifacts import read_jsonl
from lmchain.config import CollectConfig, FileSource, load_config
from lmchain.errors import ConfigError, InputError
from lmchain.sources.spans import read_label_studio, read_span_jsonl, read_spans
from lmchain.stages.collect import collect_to
from lmchain.text_spans import entity_texts


def conll_subset(tmp_path: Path, sentences: int = 60) -> Path:
    """The first ``sentences`` sentences of CoNLL-2003 train, as a file of their own."""
    out, n = [], 0
    with open(conll_dir() / "train.txt", encoding="utf-8") as fh:
        for line in fh:
            out.append(line)
            if not line.strip():
                n += 1
                if n == sentences:
                    break
    path = tmp_path / "train.txt"
    path.write_text("".join(out), encoding="utf-8")
    return path


def collect(tmp_path, *sources):
    out = tmp_path / "collected"
    m = collect_to(CollectConfig(files=list(sources)), out, home=tmp_path / "home")
    return m, list(read_jsonl(out / "records.jsonl")), list(read_jsonl(out / "rejects.jsonl"))


@needs_conll
def test_conll_sentences_become_texts_with_spans(tmp_path):
    path = conll_subset(tmp_path, 60)
    m, records, rejects = collect(tmp_path, FileSource(path=str(path), format="conll"))
    assert m.counts["records"] == 60 and not rejects
    first = records[0]
    assert first["text"] == "EU rejects German call to boycott British lamb ."
    assert entity_texts(first["text"], first["entities"]) == ["EU", "German", "British"]
    assert [e["label"] for e in first["entities"]] == ["ORG", "MISC", "MISC"]
    assert first["url"].endswith("#L1") and "meta" in first and "entities" not in first["meta"]
    # a sentence without entities is labelled (entities: []), not unlabelled
    assert any(r["entities"] == [] for r in records)


def test_bad_conll_sentences_are_kept_as_rejects_with_their_reason(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("EU B-ORG\nrejects O\n\nPeter\nBlackburn I-PER\n\nBRUSSELS B-PLACE-\nx XYZ\n\n"
                    "Anna I-PER\nSmith I-PER\n\n-DOCSTART- -X- O O\n\nfine O\n", encoding="utf-8")
    m, records, rejects = collect(tmp_path, FileSource(path=str(path), format="conll"))
    assert [r["text"] for r in records] == ["EU rejects", "Anna Smith", "fine"]
    # I- after O reads as B- (conlleval), counted
    assert records[1]["entities"] == [{"start": 0, "end": 10, "label": "PER"}] and records[1]["bio_repaired"] == 1
    reasons = {r["text"]: r["reason"].split(":")[0] for r in rejects}
    assert reasons == {"Blackburn": "bad_conll_line", "BRUSSELS x": "bad_tag"}
    assert m.drop_reasons == {"bad_conll_line": 1, "bad_tag": 1}
    assert all(r["url"].split("#L")[1] for r in rejects)  # where in the file


def spans_file(tmp_path, rows):
    path = tmp_path / "spans.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


SPAN_ROWS = [
    {"text": "Anna Smith joined ACME in Paris.", "entities": [
        {"start": 0, "end": 10, "label": "PER", "text": "Anna Smith"}, {"start": 18, "end": 22, "label": "ORG"},
        {"start": 26, "end": 31, "label": "LOC"}], "source_id": 7},
    {"text": "No entity here.", "entities": []},
    {"text": "Unlabelled text about Rome."},
    {"text": "Bob left", "entities": [{"start": 0, "end": 30, "label": "PER"}]},
    {"text": "Bob left", "entities": [{"start": 3, "end": 3, "label": "PER"}]},
    {"text": "Bob left", "entities": [{"start": 0, "end": 3, "label": "PER", "text": "Rob"}]},
    {"text": "Bob left", "entities": [{"start": 0, "end": 3, "label": "PER"}, {"start": 2, "end": 8, "label": "ORG"}]},
    {"text": "Bob left", "entities": [{"start": 0, "end": 4, "label": "PER"}]},
    "{not json",
    {"body": "no text field"},
]


def test_span_jsonl_rows_and_their_rejects(tmp_path):
    rows = list(read_span_jsonl(spans_file(tmp_path, SPAN_ROWS)))
    kept = [(text, extra) for _, text, extra, bad in rows if bad is None]
    assert entity_texts(*[kept[0][0], kept[0][1]["entities"]]) == ["Anna Smith", "ACME", "Paris"]
    assert "text" not in kept[0][1]["entities"][0] and kept[0][1]["source_id"] == 7
    assert kept[1][1]["entities"] == [] and "entities" not in kept[2][1]  # labelled-empty vs unlabelled
    reasons = [bad.split(":")[0] for *_, bad in rows if bad]
    assert reasons == ["span_outside_text", "empty_span", "span_text_mismatch", "overlapping_spans",
                       "span_edge_whitespace", "bad_json", "missing_text_field"]
    m, records, rejects = collect(tmp_path, FileSource(path=str(spans_file(tmp_path, SPAN_ROWS)), format="spans"))
    assert len(records) == 3 and len(rejects) == 7
    bad = next(r for r in rejects if r["reason"].startswith("span_text_mismatch"))
    assert bad["text"] == "Bob left" and bad["entities"][0]["text"] == "Rob"  # kept as read, for a person to fix


def ls_task(tid, text, annotations, **extra):
    return {"id": tid, "data": {"text": text}, "annotations": annotations, **extra}


def ls_annotation(who, spans, cancelled=False):
    return {"completed_by": who, "was_cancelled": cancelled, "result": [
        {"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": s, "end": e, "text": t, "labels": labels}} for s, e, t, labels in spans]}


TEXT = "Angela Merkel met Emmanuel Macron in Berlin."


def label_studio_export(tmp_path):
    tasks = [
        ls_task(1, TEXT, [
            ls_annotation(11, [(0, 13, "Angela Merkel", ["PER"]), (18, 33, "Emmanuel Macron", ["PER"]),
                               (37, 43, "Berlin", ["LOC"])]),
            ls_annotation({"id": 12, "email": "b@example.org"}, [(0, 14, "Angela Merkel ", ["PER"]),
                                                                   (37, 43, "Berlin", ["ORG"])]),
            ls_annotation(13, [(0, 6, "Angela", ["PER"])], cancelled=True),
        ], predictions=[{"result": []}]),
        ls_task(2, "Nobody labelled this yet.", []),
        ls_task(3, TEXT, [ls_annotation(11, [(0, 13, "Angela Merkel", ["PER", "ORG"])])]),
        ls_task(4, TEXT, [ls_annotation(11, [(0, 13, "Angela Merkle", ["PER"])])]),
        ls_task(5, TEXT, [ls_annotation(11, [(0, 13, "Angela Merkel", ["PER"])]),
                          ls_annotation(12, [(40, 60, "lin.", ["LOC"])])]),
        ls_task(6, TEXT, [ls_annotation(11, [(0, 13, "Angela Merkel", ["PER"]), (7, 20, "Merkel met Em", ["ORG"])])]),
        {"id": 7, "text": "Rome is big.", "label": [{"start": 0, "end": 4, "text": "Rome", "labels": ["LOC"]}]},
        "not a task",
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path


def test_label_studio_ner_export_keeps_every_annotator(tmp_path):
    rows = list(read_label_studio(label_studio_export(tmp_path)))
    assert len(rows) == 8
    _, text, extra, bad = rows[0]
    assert bad is None and extra["task_id"] == 1
    anns = extra["annotations"]
    assert [a["annotator"] for a in anns] == ["11", "b@example.org"]  # the cancelled one is not a label
    assert [entity_texts(text, a["entities"]) for a in anns] == [["Angela Merkel", "Emmanuel Macron", "Berlin"],
                                                                 ["Angela Merkel", "Berlin"]]  # trailing space trimmed
    assert anns[1]["entities"][1]["label"] == "ORG"  # disagreements are kept for annotate to aggregate
    assert rows[1][2] == {"task_id": 2} and rows[1][3] is None  # unannotated: unlabelled text
    reasons = [r[3].split(":")[0] if r[3] else None for r in rows[2:]]
    assert reasons == ["several_labels", "span_text_mismatch", "span_outside_text", "overlapping_spans", None,
                       "not_an_object"]
    assert "annotator 12" in rows[4][3]
    assert rows[6][2]["annotations"][0]["entities"] == [{"start": 0, "end": 4, "label": "LOC"}]  # JSON-MIN
    m, records, rejects = collect(tmp_path, FileSource(path=str(label_studio_export(tmp_path)), format="label-studio"))
    assert len(records) == 3 and len(rejects) == 5
    assert "annotations" in records[0] and "annotations" not in records[1]
    assert next(r for r in rejects if r["reason"].startswith("several_labels"))["text"] == TEXT


def test_a_broken_export_names_the_file(tmp_path):
    path = tmp_path / "export.json"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        list(read_spans(path, "label-studio"))
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match="expected a JSON list"):
        list(read_spans(path, "label-studio"))


def test_recipes_say_their_task_and_it_must_fit():
    assert load_config("tiny").task == "classification"
    cfg = load_config("conll")
    assert cfg.task == "ner" and cfg.annotate.entity_types == ["PER", "ORG", "LOC", "MISC"]
    assert cfg.collect.files[0].format == "conll" and cfg.collect.files[0].path == "${CONLL}/train.txt"
    with pytest.raises(ConfigError, match=r"'collect.files\[0\].format': 'conll' reads entity spans: set task: ner"):
        load_config("tiny", ["collect.files=[{path: x.txt, format: conll}]"])
    with pytest.raises(ConfigError, match="'annotate.labels': add at least one label file .task: ner: give entity"):
        load_config("conll", ["annotate.entity_types=[]"])
    with pytest.raises(ConfigError, match="'annotate.entity_types': task: ner needs the entity types"):
        load_config("tiny", ["task=ner"])
    with pytest.raises(ConfigError, match="'annotate.labels': label files are for classification"):
        load_config("conll", ["annotate.labels=[{path: x.tsv}]"])
    with pytest.raises(ConfigError, match="'annotate.mode': semi-automatic span labels are not there yet"):
        load_config("conll", ["annotate.mode=mixed"])
    with pytest.raises(ConfigError, match="'annotate.entity_types': must be distinct"):
        load_config("conll", ["annotate.entity_types=[PER, B-ORG]"])
    with pytest.raises(ConfigError, match="'task': must be 'classification' or 'ner'"):
        load_config("conll", ["task=pos"])


@needs_conll
def test_the_conll_variable_expands_to_the_data_folder():
    from lmchain.sources.files import resolve_files

    assert resolve_files("${CONLL}/train.txt") == [conll_dir() / "train.txt"]


def test_classification_feedback_labels_stay_out_of_a_ner_run(tmp_path):
    from lmchain.feedback import labels_path, with_feedback_labels

    target = labels_path(tmp_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('{"text": "great film", "label": "positive"}\n', encoding="utf-8")
    ner = load_config("conll")
    assert with_feedback_labels(ner, tmp_path) is ner  # (text, label) rows are no span labels
    cls = load_config("tiny")
    assert with_feedback_labels(cls, tmp_path).annotate.labels[-1].path == str(target)


def test_a_span_source_is_found_by_its_formats_extensions(tmp_path):
    from lmchain.sources.files import resolve_files

    (tmp_path / "a.conll").write_text("EU B-ORG\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# not data\n", encoding="utf-8")
    assert resolve_files(str(tmp_path), "conll") == [tmp_path / "a.conll"]
    assert resolve_files(str(tmp_path / "a.conll"), "conll") == [tmp_path / "a.conll"]
    with pytest.raises(InputError, match="unsupported extension"):
        resolve_files(str(tmp_path / "a.conll"))  # a text source knows no .conll
    m, records, _ = collect(tmp_path, FileSource(path=str(tmp_path / "a.conll"), format="conll"))
    assert records[0]["entities"] == [{"start": 0, "end": 2, "label": "ORG"}]
