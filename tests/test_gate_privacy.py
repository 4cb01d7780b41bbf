"""Gates publish no raw values: a script and an e-mail address planted in a batch appear in no GX
result, Data Docs page, validation.json, stage output or MLflow artifact; the quarantine (for the
operator only) holds the failing rows with the expectations they failed. Empty batches are
blocked with a clear message."""

import json
import stat
import time

import pytest

from lmchain.artifacts import RunContext, read_jsonl
from lmchain.config import GateConfig, SuiteConfig, replace
from lmchain.errors import GateFailed
from lmchain.quality import data_docs_dir
from lmchain.quality.checks import check
from lmchain.quality.batches import records_frame
from lmchain.quality.gate import quarantine_dir

XSS = "<img src=x onerror=alert(1)>"
EMAIL = "victim@example.com"
PLANTED = f"please write to {EMAIL} {XSS} about the film"
SECRETS = (XSS.encode(), EMAIL.encode(), b"onerror=alert")


def english(i: int) -> str:
    return f"the film was a good story about people and the cast did it well in part {i}"


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LMCHAIN_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    return home


def files_holding_secrets(folder, skip=()):
    """Every file under ``folder`` (binary ones too: SQLite, HTML, JSON) that holds a planted string."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and not any(path.is_relative_to(s) for s in skip):
            data = path.read_bytes()
            if any(s in data for s in SECRETS):
                hits.append(str(path))
    return hits


def mlflow_artifacts_of(run_id, dest):
    """Download every artifact of every MLflow run tagged with this lmchain run (the published view)."""
    from lmchain import registry

    client = registry.client()
    runs = client.search_runs([client.get_experiment_by_name("lmchain").experiment_id],
                              filter_string=f"tags.`lmchain.run_id` = '{run_id}'")
    assert runs, "the gate logged nothing to MLflow"
    for run in runs:
        (dest / run.info.run_id).mkdir(parents=True)
        client.download_artifacts(run.info.run_id, "", str(dest / run.info.run_id))
    return dest


def assert_operator_only(qdir, home):
    for folder in [home / "quarantine", *[p for p in (home / "quarantine").rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for f in [p for p in qdir.rglob("*") if p.is_file()]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_a_blocked_pipeline_batch_publishes_no_planted_value(home, tmp_path):
    batch = tmp_path / "in" / "records.jsonl"  # outside the home: the source data itself is not under test
    batch.parent.mkdir()
    texts = [english(i) for i in range(60)] + [PLANTED]
    batch.write_text("".join(json.dumps({"id": str(i), "text": t, "source": "file"}) + "\n"
                             for i, t in enumerate(texts)))
    ctx = RunContext("xss-curated", home=home)
    with pytest.raises(GateFailed) as exc:
        check(ctx, "gate", GateConfig(curated=SuiteConfig(min_rows=10)),
              {"curated": (records_frame(batch), [batch])}, [], {"records": str(batch)})
    assert "expect_column_values_to_not_contain_pii" in str(exc.value)
    assert not any(s.decode() in str(exc.value) for s in SECRETS)  # the task's error message is published too

    qdir = quarantine_dir(home, ctx.run_id, "curated")
    # Everything under the home but the quarantine: GX results and Data Docs, the stage output with
    # validation.json and manifest, the MLflow store and its artifacts.
    assert (data_docs_dir(home) / "index.html").is_file() and (ctx.stage_dir("gate") / "validation.json").is_file()
    assert files_holding_secrets(home, skip=[home / "quarantine"]) == []
    assert files_holding_secrets(mlflow_artifacts_of(ctx.run_id, tmp_path / "mlflow_dl")) == []
    validation = json.loads((ctx.stage_dir("gate") / "validation.json").read_text())
    pii = next(c for c in validation["curated"]["checks"]
               if c["expectation"] == "expect_column_values_to_not_contain_pii")
    assert pii["failing_rows"] == 1 and pii["row_index_sample"] == [60]  # which row, not what it says

    (row,) = read_jsonl(qdir / "failing_rows.jsonl")
    assert row["row"] == 60 and row["id"] == "60" and row["text"] == PLANTED
    assert row["reasons"] == ["expect_column_values_to_not_contain_pii"]
    assert_operator_only(qdir, home)


def test_feedback_gate_holds_the_planted_row_and_publishes_none_of_it(home, tmp_path):
    from lmchain.config import load_config
    from lmchain.stages import FEEDBACK, name
    from lmchain.stages.runner import run_stage
    from lmchain.serve.store import ServingStore

    cfg = load_config("tiny", [f"deploy.service.store_url=sqlite:///{tmp_path / 'store.db'}"])
    cfg = replace(cfg, gate=replace(cfg.gate, feedback=SuiteConfig(max_duplicate_rate=1.0)))
    store = ServingStore(cfg.deploy.service.store_url)
    for i, text in enumerate([english(i) for i in range(10)] + [PLANTED]):
        store.add_feedback({"feedback_id": f"fb{i}", "created_at": time.time(), "request_id": f"r{i}", "text": text,
                            "text_sha256": "0" * 64, "predicted_label": "negative", "correct_label": "positive",
                            "comment": None, "model": "m", "version": "1"})
    store.close()
    done = {}
    for stage in FEEDBACK[:2]:  # export, gate
        done[name(stage)] = run_stage(stage.run, cfg, "xss-feedback", done, lmchain_home=home)
    assert done["gate"]["counts"]["quarantined_rows"] == 1 and done["gate"]["counts"]["passed_rows"] == 10
    ctx = RunContext("xss-feedback", home=home)
    # The export's own copy of the store is raw data by design (and 0600); all else is published.
    export = ctx.stage_dir("feedback_export")
    assert stat.S_IMODE((export / "batch.jsonl").stat().st_mode) == 0o600
    assert files_holding_secrets(home, skip=[home / "quarantine", export]) == []
    assert files_holding_secrets(mlflow_artifacts_of(ctx.run_id, tmp_path / "mlflow_dl")) == []
    assert not any(s in (ctx.stage_dir("feedback_gate") / "accepted.jsonl").read_bytes() for s in SECRETS)

    qdir = quarantine_dir(home, ctx.run_id, "feedback")
    (row,) = read_jsonl(qdir / "rows.jsonl")
    assert row["text"] == PLANTED and row["store_id"] == 11 and row["row"] == 10
    assert row["reasons"] == ["expect_column_values_to_not_contain_pii"]
    assert_operator_only(qdir, home)


@pytest.mark.parametrize("suite", ["raw", "curated"])
def test_an_empty_pipeline_batch_is_blocked_with_a_clear_message(home, tmp_path, suite):
    empty = tmp_path / "records.jsonl"
    empty.write_text("")
    with pytest.raises(GateFailed, match=r"batch .*records\.jsonl is empty \(0 rows\), so there is nothing to "
                                         r"validate"):
        check(RunContext("empty", home=home), "gate", GateConfig(), {suite: (records_frame(empty), [empty])}, [], {})


def test_an_empty_labelled_split_set_is_blocked_too(home, tmp_path):
    from lmchain.quality.batches import labelled_frame

    files = {s: tmp_path / f"{s}.jsonl" for s in ("train", "validation", "test")}
    for f in files.values():
        f.write_text("")
    with pytest.raises(GateFailed, match=r"labelled batch .* is empty \(0 rows\)"):
        check(RunContext("empty", home=home), "gate_labels", GateConfig(),
              {"labelled": (labelled_frame(files), list(files.values()))}, ["negative", "positive"], {})


def test_failing_rows_are_named_for_each_expectation(home, tmp_path):
    """Empty texts and duplicates: each failing row is in the quarantine with every reason it has."""
    texts = [english(i) for i in range(60)] + [""] * 2 + [english(3)] * 5
    batch = tmp_path / "records.jsonl"
    batch.write_text("".join(json.dumps({"id": str(i), "text": t, "source": "file"}) + "\n"
                             for i, t in enumerate(texts)))
    ctx = RunContext("rows", home=home)
    with pytest.raises(GateFailed):
        check(ctx, "gate", GateConfig(curated=SuiteConfig(min_rows=10)),
              {"curated": (records_frame(batch), [batch])}, [], {})
    rows = {r["row"]: r["reasons"] for r in read_jsonl(quarantine_dir(home, "rows", "curated") / "failing_rows.jsonl")}
    assert rows[60] == ["expect_column_value_lengths_to_be_between"]
    # The second empty text also repeats the first: both reasons.
    assert rows[61] == ["expect_column_duplicate_rate_to_be_between", "expect_column_value_lengths_to_be_between"]
    assert set(rows) == {60, 61, 62, 63, 64, 65, 66}
    assert all(rows[i] == ["expect_column_duplicate_rate_to_be_between"] for i in range(62, 67))


@pytest.mark.parametrize("line, error", [
    ('{"id": "2", "text": "cut off', r"line 2: not valid JSON \(Unterminated string"),
    ('["a list"]', r"line 2: a JSON list, not an object")])
def test_a_malformed_batch_line_is_named_without_a_traceback(home, tmp_path, line, error):
    from lmchain.errors import InputError

    batch = tmp_path / "records.jsonl"
    batch.write_text(json.dumps({"id": "1", "text": english(1), "source": "file"}) + "\n" + line + "\n")
    with pytest.raises(InputError, match=rf"records\.jsonl, {error}"):
        records_frame(batch)


def test_record_keys_and_ids_are_not_published_either(home, tmp_path):
    """GX's column check reports the column names it sees, and its uniqueness check the repeated
    ids: a key or an id holding the payload must reach neither Data Docs nor validation.json."""
    batch = tmp_path / "in" / "records.jsonl"
    batch.parent.mkdir()
    rows = [{"id": str(i), "text": english(i), "source": "file"} for i in range(20)]
    rows[3][XSS] = EMAIL
    rows[4]["id"] = rows[5]["id"] = f"{XSS}{EMAIL}"
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = RunContext("keys", home=home)
    with pytest.raises(GateFailed, match="expect_column_values_to_be_unique"):
        check(ctx, "gate", GateConfig(curated=SuiteConfig(min_rows=5)), {"curated": (records_frame(batch), [batch])},
              [], {})
    assert files_holding_secrets(home, skip=[home / "quarantine"]) == []
    held = {r["row"]: r for r in read_jsonl(quarantine_dir(home, "keys", "curated") / "failing_rows.jsonl")}
    assert sorted(held) == [4, 5] and held[4]["id"] == f"{XSS}{EMAIL}"
