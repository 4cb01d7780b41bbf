"""No feedback is lost: the watermark moves only after merge has replaced labels.jsonl, a gate
failure holds the failing rows (not the batch), a person releases held rows with a reason, reruns
merge nothing twice, and two merges at once on one home both land. Feedback rows go straight into
the real ServingStore (its SQLite), not through the HTTP API."""

import json
import re
import subprocess
import sys
import time

import pytest

from lmchain.artifacts import RunContext, read_jsonl
from lmchain.config import FeedbackConfig, load_config, replace
from lmchain.errors import GateFailed, InputError
from lmchain.feedback import labels_path
from lmchain.feedback.quarantine import release
from lmchain.feedback.watermark import Watermark
from lmchain.quality.gate import quarantine_dir
from lmchain.serve.store import ServingStore
from lmchain.stages import FEEDBACK, feedback, name
from lmchain.stages.runner import run_stage

PII_TEXT = "the film was great, write to victim@example.com <img src=x onerror=alert(1)> for more"
AMOUNT_TEXT = "it made 10 000 000 dollars and the film deserved every one of them"
SECRETS = (b"victim@example.com", b"onerror=alert")


def good(i: int) -> str:
    return f"the film number {i} was a good story and the cast did it well"


def post(store, texts, predicted="negative", correct="positive", start=0):
    for i, text in enumerate(texts):
        store.add_feedback({"feedback_id": f"fb{start + i}", "created_at": time.time(), "request_id": f"r{start + i}",
                            "text": text, "text_sha256": "0" * 64, "predicted_label": predicted,
                            "correct_label": correct, "comment": None, "model": "m", "version": "1"})


def thirty_good_and_one_pii():
    """Rows 1-15 good, 16 the PII one, 17-31 good (the amount among them): the held row lies
    below good ones, so a watermark that skipped it would show."""
    texts = [good(i) for i in range(29)] + [AMOUNT_TEXT]
    return texts[:15] + [PII_TEXT] + texts[15:]


def config(home, *overrides):
    cfg = load_config("tiny", [f"deploy.service.store_url=sqlite:///{home / 'store.db'}", *overrides])
    return replace(cfg, feedback=FeedbackConfig(min_new_labels=1000, max_error_rate=1.0))


def run_all(cfg, run_id, home):
    done = {}
    for stage in FEEDBACK:
        done[name(stage)] = run_stage(stage.run, cfg, run_id, done, lmchain_home=home)
    return done


def labels(home):
    return list(read_jsonl(labels_path(home))) if labels_path(home).is_file() else []


def assert_nothing_lost(home, store_url):
    """Every store row up to the watermark is merged, or held in a quarantine and not dropped."""
    store = ServingStore(store_url)
    try:
        rows = store.feedback_since(0)
    finally:
        store.close()
    mark = Watermark.read(home)
    merged = {r["feedback_id"] for r in labels(home)}
    held, dropped = set(), set()
    for rows_file in (home / "quarantine").glob("*/feedback/rows.jsonl"):
        record_file = rows_file.with_name("release.json")
        record = json.loads(record_file.read_text()) if record_file.is_file() else {}
        for r in read_jsonl(rows_file):
            (dropped if r["row"] in record.get("dropped_rows", []) else held).add(r["feedback_id"])
    for r in rows:
        if mark.covers(r["id"]):
            assert r["feedback_id"] in merged | held | dropped, f"store row {r['id']} passed by the watermark, unmerged"
    return mark, merged, held


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCHAIN_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    return tmp_path


# ---------------------------------------------------------------------------- acceptance, through Airflow


def test_30_good_and_1_pii_through_the_dag_then_released(tmp_path):
    """dag.test() of lmchain_feedback in a fresh home: the 30 merge (the amount is no phone number),
    the PII row is held with its reason and published nowhere, the watermark passes it only while
    it is held; released with a reason, it merges in the next run, once."""
    from conftest import REPO, lmchain_cmd, subprocess_env

    lm_home = tmp_path / "home"
    env = subprocess_env(lm_home)
    store_url = f"sqlite:///{lm_home / 'serving' / 'store.db'}"
    store = ServingStore(store_url)
    post(store, thirty_good_and_one_pii())
    store.close()

    def lmchain(*args, rc=0):
        proc = subprocess.run(lmchain_cmd(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == rc, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    first = lmchain("feedback", "--recipe", "tiny", "--set", "feedback.min_new_labels=1000")
    run_id = re.search(r"lmchain_feedback run (\S+):", first.stdout).group(1)
    assert "merge    success" in first.stdout and "quarantined: 1 feedback rows held" in first.stdout
    got = {r["text"]: r for r in labels(lm_home)}
    assert len(got) == 30 and AMOUNT_TEXT in got and PII_TEXT not in got
    mark, merged, held = assert_nothing_lost(lm_home, store_url)
    assert mark.last_id == 31 and held == {"fb15"}  # past the held row, because the quarantine holds it
    qdir = quarantine_dir(lm_home, run_id, "feedback")
    (row,) = read_jsonl(qdir / "rows.jsonl")
    assert row["store_id"] == 16 and row["reasons"] == ["expect_column_values_to_not_contain_pii"]
    # Published nowhere: not in Data Docs, GX results, stage outputs, MLflow, Airflow's task logs.
    raw_by_design = [lm_home / "quarantine", lm_home / "serving", RunContext(run_id, home=lm_home).stage_dir(
        "feedback_export")]
    assert (lm_home / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    assert list((lm_home / "mlflow" / "artifacts").rglob("feedback_gate/validation.json"))
    assert list((lm_home / "mlflow" / "artifacts").rglob("feedback_gate/data_docs/feedback/*/*.html"))
    leaks = [str(p) for p in lm_home.rglob("*") if p.is_file() and not any(p.is_relative_to(d) for d in raw_by_design)
             and any(s in p.read_bytes() for s in SECRETS)]
    assert leaks == []

    listing = lmchain("feedback", "quarantine")
    assert f"run {run_id}: 1 rows, held" in listing.stdout
    assert "expect_column_values_to_not_contain_pii" in listing.stdout
    assert "victim@example.com" not in listing.stdout
    no_reason = lmchain("feedback", "release", "--run-id", run_id, rc=2)
    assert "needs a --reason" in no_reason.stderr and "Traceback" not in no_reason.stderr
    lmchain("feedback", "release", "--run-id", run_id, "--reason", "the address is the shop's public one")

    second = lmchain("feedback", "--recipe", "tiny", "--set", "feedback.min_new_labels=1000")
    second_id = re.search(r"lmchain_feedback run (\S+):", second.stdout).group(1)
    got = {r["text"] for r in labels(lm_home)}
    assert len(got) == 31 and any("victim@example.com" in t for t in got)
    record = json.loads((qdir / "release.json").read_text())
    assert record["merged_in"] == second_id and record["reason"] == "the address is the shop's public one"
    assert record["released_by"] and record["released_at"] and record["released_rows"] == [15]
    assert Watermark.read(lm_home).last_id == 31
    assert json.loads((RunContext(second_id, home=lm_home).stage_dir("feedback_merge") / "manifest.json")
                      .read_text())["counts"]["released"] == 1


# ---------------------------------------------------------------------------- the watermark


def test_a_batch_held_back_whole_is_exported_again(home):
    """Too few rows is nobody's row's fault: nothing merges, the watermark stays, the next run
    exports the same rows again (today's export moved the watermark first and skipped them)."""
    cfg = config(home, "gate.feedback.min_rows=10")
    store = ServingStore(cfg.deploy.service.store_url)
    post(store, [good(i) for i in range(4)])
    done = {"export": run_stage(feedback.export.run, cfg, "small", {}, lmchain_home=home)}
    with pytest.raises(GateFailed, match="watermark stays at store id 0, so the next run exports these rows again"):
        run_stage(feedback.gate.run, cfg, "small", done, lmchain_home=home)
    assert Watermark.read(home).last_id == 0 and not (home / "quarantine").exists()
    post(store, [good(i) for i in range(4, 12)], start=4)
    done = run_all(cfg, "bigger", home)
    assert done["export"]["counts"]["records"] == 12 and done["merge"]["counts"]["new_labels"] == 12
    assert Watermark.read(home).last_id == 12 and len(labels(home)) == 12
    store.close()


def test_the_watermark_is_written_by_merge_only(home):
    cfg = config(home)
    store = ServingStore(cfg.deploy.service.store_url)
    post(store, thirty_good_and_one_pii())
    done = {}
    for stage in FEEDBACK[:2]:  # export, gate
        done[name(stage)] = run_stage(stage.run, cfg, "fb", done, lmchain_home=home)
        assert Watermark.read(home).last_id == 0, f"{name(stage)} moved the watermark"
    assert done["gate"]["counts"] == {**done["gate"]["counts"], "passed_rows": 30, "quarantined_rows": 1}
    run_stage(feedback.merge.run, cfg, "fb", done, lmchain_home=home)
    mark, merged, held = assert_nothing_lost(home, cfg.deploy.service.store_url)
    assert mark.last_id == 31 and len(merged) == 30 and held == {"fb15"}
    store.close()


def test_watermark_spans_fold_when_the_gap_below_is_merged():
    mark = Watermark()
    mark.add(10, 20)  # a later batch merged first
    assert mark.last_id == 0 and mark.spans == [[10, 20]] and mark.covers(15) and not mark.covers(5)
    mark.add(30, 40)
    mark.add(0, 10)
    assert mark.last_id == 20 and mark.spans == [[30, 40]]
    mark.add(20, 30)
    assert mark.last_id == 40 and mark.spans == []
    mark.add(35, 35)  # an empty batch
    assert mark.last_id == 40 and mark.spans == []


# ---------------------------------------------------------------------------- reruns, releases, empty batches


def test_a_rerun_merges_nothing_twice(home):
    cfg = config(home)
    store = ServingStore(cfg.deploy.service.store_url)
    post(store, thirty_good_and_one_pii())
    run_all(cfg, "fb1", home)
    release(home, "fb1", "checked by hand")
    second = run_all(cfg, "fb2", home)
    assert second["merge"]["counts"]["released"] == 1 and second["merge"]["counts"]["new_labels"] == 1
    snapshot = labels_path(home).read_bytes(), (home / "feedback" / "watermark.json").read_bytes()
    release_file = quarantine_dir(home, "fb1", "feedback") / "release.json"
    record = release_file.read_bytes()

    again = run_all(cfg, "fb2", home)  # the whole run again (Airflow: clear the run)
    assert again["merge"] == second["merge"] and again["decide"]["info"]["pending"] == \
        second["decide"]["info"]["pending"]
    # The merge finished but died before publishing its output: the retry must not merge again.
    import shutil

    shutil.rmtree(RunContext("fb2", home=home).stage_dir("feedback_merge"))
    retried = run_stage(feedback.merge.run, cfg, "fb2", {"gate": second["gate"]}, lmchain_home=home)
    assert retried["counts"] == second["merge"]["counts"]
    assert (labels_path(home).read_bytes(), (home / "feedback" / "watermark.json").read_bytes()) == snapshot
    assert release_file.read_bytes() == record
    third = run_all(cfg, "fb3", home)  # and a later run does not take the released row again
    assert third["export"]["counts"]["records"] == 0 and third["merge"]["counts"]["batch"] == 0
    assert len(labels(home)) == 31
    store.close()


def test_release_needs_a_reason_can_drop_rows_and_is_final(home):
    cfg = config(home)
    store = ServingStore(cfg.deploy.service.store_url)
    post(store, [good(i) for i in range(10)])
    post(store, ["mail me at jo@example.org about it", "call me on +1 415 555 2671 about the film"], start=10)
    post(store, [good(99)], correct="neutral", start=12)  # not a label of the model
    first = run_all(cfg, "fb1", home)
    assert first["gate"]["counts"]["quarantined_rows"] == 3 and first["merge"]["counts"]["new_labels"] == 10
    held = {r["row"]: r for r in read_jsonl(quarantine_dir(home, "fb1", "feedback") / "rows.jsonl")}
    assert sorted(held) == [10, 11, 12] and held[12]["reasons"] == ["expect_column_values_to_be_in_set"]

    with pytest.raises(InputError, match="needs a --reason"):
        release(home, "fb1", "  ")
    with pytest.raises(InputError, match=r"--drop \[7\]: run fb1 holds rows \[10, 11, 12\] only"):
        release(home, "fb1", "ok", drop=[7])
    with pytest.raises(InputError, match="no quarantined feedback rows for run nope.*fb1"):
        release(home, "nope", "ok")
    release(home, "fb1", "the e-mail row is spam; the phone is the shop's", drop=[10, 12])
    with pytest.raises(InputError, match="already released .* a release is final"):
        release(home, "fb1", "again")
    second = run_all(cfg, "fb2", home)
    assert second["merge"]["counts"]["released"] == 1
    texts = {r["text"] for r in labels(home)}
    assert "call me on +1 415 555 2671 about the film" in texts and len(texts) == 11
    assert not any("jo@example.org" in t for t in texts)
    mark, merged, held = assert_nothing_lost(home, cfg.deploy.service.store_url)
    assert mark.last_id == 13
    store.close()


def test_gate_accept_points_feedback_rows_to_release(home):
    from lmchain.quality.gate import accept

    cfg = config(home)
    store = ServingStore(cfg.deploy.service.store_url)
    post(store, [good(1), PII_TEXT])
    run_all(cfg, "fb1", home)
    with pytest.raises(InputError, match="holds rows, not a batch: release them with `lmchain feedback release"):
        accept(home, "fb1", "feedback", "fine")
    store.close()


def test_an_empty_feedback_batch_is_skipped_with_a_message(home, capsys):
    cfg = config(home)
    ServingStore(cfg.deploy.service.store_url).close()
    done = run_all(cfg, "nothing", home)
    assert done["gate"]["info"]["empty"] and done["gate"]["info"]["message"] == \
        "no new feedback after store id 0: nothing to validate or merge"
    assert "nothing to validate or merge" in capsys.readouterr().out
    assert done["merge"]["counts"]["batch"] == 0 and not labels_path(home).exists()


# ---------------------------------------------------------------------------- two runs, one home

MERGER = r"""
import json, sys, time
from pathlib import Path
from lmchain.artifacts import RunContext, write_jsonl
from lmchain.config import load_config
from lmchain.stages.feedback.merge import run as merge

home, name, first, batches, size, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), Path(sys.argv[6])
cfg = load_config("tiny")
while not go.exists():
    time.sleep(0.01)
for k in range(batches):
    after = (first + 2 * k) * size  # this process takes every other span: the two interleave
    rows = [{"text": f"text number {i} of the shared home", "predicted_label": "negative", "correct_label": "positive",
             "feedback_id": f"fb{i}", "request_id": f"r{i}", "created_at": 0.0, "model": "m", "version": "1",
             "store_id": i} for i in range(after + 1, after + size + 1)]
    batch = home / f"{name}-{k}.jsonl"
    write_jsonl(batch, rows)
    gate = {"outputs": {"batch": str(batch)}, "info": {"after_id": after, "last_id": after + size},
            "counts": {"quarantined_rows": 0}}
    merge(cfg, RunContext(f"{name}-{k}", home=home), {"gate": gate})
"""


def test_two_processes_merging_into_one_home_both_land(tmp_path):
    """Two feedback merges at once, each of 15 interleaved batches: every row lands exactly once,
    and the watermark ends past all of them with no span left open."""
    import os

    from conftest import REPO, subprocess_env

    home = tmp_path / "home"
    home.mkdir()
    go = tmp_path / "go"
    env = {**subprocess_env(home), "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    batches, size = 15, 4
    procs = [subprocess.Popen([sys.executable, "-c", MERGER, str(home), name, str(first), str(batches), str(size),
                               str(go)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, first in (("a", 0), ("b", 1))]
    time.sleep(3)  # both imported and waiting
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    rows = labels(home)
    ids = sorted(r["store_id"] for r in rows)
    assert ids == list(range(1, 2 * batches * size + 1))  # all there, none twice
    mark = Watermark.read(home)
    assert mark.last_id == 2 * batches * size and mark.spans == []


def test_a_held_lock_times_out_with_a_clear_message(tmp_path):
    from lmchain.locking import LockTimeout, file_lock

    target = tmp_path / "labels.jsonl"
    with file_lock(target):
        with pytest.raises(LockTimeout, match=r"could not lock .*labels.jsonl within 0.2s: another lmchain run "
                                              r"holds .*labels.jsonl.lock \(pid \d+ since"):
            with file_lock(target, timeout=0.2):
                pass
    with file_lock(target, shared=True), file_lock(target, shared=True, timeout=0.2):
        pass  # readers share
