"""The feedback loop's stages on a real store and GX gate, the trigger form's params, and the
pipeline's use of merged corrections."""

import json
import time

import pytest

from lmchain.artifacts import RunContext, read_jsonl
from lmchain.config import FeedbackConfig, load_config, replace
from lmchain.feedback import labels_path, with_feedback_labels
from lmchain.params import schema, should_skip, to_overrides
from lmchain.serve.store import ServingStore
from lmchain.stages import FEEDBACK, name
from lmchain.stages.runner import run_stage

POSITIVE = ["the battery of this phone lasts for two full days", "the screen is bright and it is sharp",
            "it was set up in one minute and it just works", "the camera of this phone takes lovely photos",
            "it charges very quickly and it is never hot", "the speaker is loud and the sound is clear"]
NEGATIVE = ["the battery of this phone died after an hour", "the screen cracked on the first day",
            "it overheats when it is charging", "the camera app of this phone keeps crashing",
            "the support never answered any of my emails", "the case of the phone broke in a week"]


def _cfg(home, **feedback):
    cfg = load_config("tiny", [f"deploy.service.store_url=sqlite:///{home / 'store.db'}"])
    return replace(cfg, feedback=FeedbackConfig(**{"min_new_labels": 8, **feedback}))


def _post(store, texts, predicted, correct, start=0):
    for i, text in enumerate(texts):
        store.add_feedback({"feedback_id": f"fb{start + i}", "created_at": time.time(), "request_id": f"r{start + i}",
                            "text": text, "text_sha256": "0" * 64, "predicted_label": predicted,
                            "correct_label": correct, "comment": None, "model": "m", "version": "1"})


def _run_all(cfg, run_id, home):
    done = {}
    for stage in FEEDBACK:
        done[name(stage)] = run_stage(stage.run, cfg, run_id, done, lmchain_home=home)
    return done


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCHAIN_HOME", str(tmp_path))
    # MLflow too: the gate logs to the "lmchain" experiment, whose artifact root follows the home;
    # on the session's store it would point other tests' experiment at this temp folder.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    return tmp_path


def test_feedback_is_exported_once_merged_and_triggers_a_retrain(home):
    cfg = _cfg(home)
    store = ServingStore(cfg.deploy.service.store_url)
    _post(store, POSITIVE, "negative", "positive")
    first = _run_all(cfg, "fb_run_1", home)
    assert first["export"]["counts"]["records"] == 6 and first["merge"]["counts"]["new_labels"] == 6
    decision = first["decide"]["info"]
    assert not decision["trigger"] and "waiting: 6 of 8 new labels" in decision["reason"]
    # Rerun of the same run: the same batch again, not counted twice.
    again = _run_all(cfg, "fb_run_1", home)
    assert again["export"]["outputs"]["batch"] == first["export"]["outputs"]["batch"]
    assert again["decide"]["info"]["pending"]["pending_labels"] == 6

    _post(store, NEGATIVE[:4], "positive", "negative", start=100)
    _post(store, ["The battery of this phone lasts for two full days!"], "positive", "negative",
          start=200)  # the same text up to case and punctuation, relabelled
    second = _run_all(cfg, "fb_run_2", home)
    assert second["export"]["counts"]["records"] == 5  # only what arrived after the first export
    assert second["merge"]["counts"]["new_labels"] == 4 and second["merge"]["counts"]["changed_labels"] == 1
    decision = second["decide"]["info"]
    assert decision["trigger"] and "11 new or changed labels >= feedback.min_new_labels=8" in decision["reason"]
    labels = {r["text"].lower(): r for r in read_jsonl(labels_path(home))}
    assert len(labels) == 10 and labels["the battery of this phone lasts for two full days!"]["label"] == "negative"
    assert all(r["provenance"] == "feedback" for r in labels.values())
    # The trigger consumed what was pending; nothing new -> no trigger.
    third = _run_all(cfg, "fb_run_3", home)
    assert third["export"]["counts"]["records"] == 0 and not third["decide"]["info"]["trigger"]
    store.close()


def test_drift_triggers_before_the_label_count(home):
    cfg = _cfg(home, min_new_labels=1000, min_batch_for_drift=10, max_error_rate=0.5)
    store = ServingStore(cfg.deploy.service.store_url)
    _post(store, POSITIVE + NEGATIVE[:4], "negative", "positive")
    decision = _run_all(cfg, "fb_drift", home)["decide"]["info"]
    assert decision["trigger"] and decision["reason"].startswith("drift: 100% of 10 feedback records")
    store.close()


def test_a_bad_feedback_batch_is_quarantined_by_rows_and_the_loop_goes_on(home):
    """Rows with a label the model does not have are held, not the run: the gate task passes,
    nothing is merged, and the watermark moves past them only because the quarantine holds them."""
    from lmchain.feedback.watermark import Watermark

    cfg = _cfg(home)
    store = ServingStore(cfg.deploy.service.store_url)
    _post(store, POSITIVE[:3], "negative", "neutral")  # not a label of the model
    done = _run_all(cfg, "fb_bad", home)
    assert done["gate"]["counts"]["quarantined_rows"] == 3 and done["gate"]["counts"]["passed_rows"] == 0
    held = list(read_jsonl(home / "quarantine" / "fb_bad" / "feedback" / "rows.jsonl"))
    assert len(held) == 3 and all(r["reasons"] == ["expect_column_values_to_be_in_set"] for r in held)
    assert done["merge"]["counts"]["batch"] == 0 and not labels_path(home).exists()
    assert Watermark.read(home).last_id == 3
    store.close()


def test_corrections_join_the_corpus_and_win_over_the_original_label(home, tmp_path):
    from lmchain.annotate.aggregate import aggregate_votes
    from lmchain.annotate.importers import load_votes

    original = tmp_path / "orig.tsv"
    original.write_text("sentence\tlabel\nthe plot is thin\t1\nthe cast is great\t1\n")
    cfg = load_config("tiny", [f"collect.files=[{{path: {original}, text_field: sentence}}]",
                               f"annotate.labels=[{{path: {original}, text_field: sentence, label_field: label}}]"])
    assert with_feedback_labels(cfg, home) is cfg  # no feedback yet: unchanged
    labels_path(home).parent.mkdir(parents=True)
    labels_path(home).write_text(json.dumps({"text": "The plot is thin", "label": "negative"}) + "\n"
                                 + json.dumps({"text": "a brand new sentence", "label": "positive"}) + "\n")
    with_fb = with_feedback_labels(cfg, home)
    assert str(labels_path(home)) in [f.path for f in with_fb.collect.files]
    votes, _, names, _ = load_votes(with_fb.annotate.labels, list(with_fb.annotate.label_names))
    labels, rejects, _, _ = aggregate_votes(votes, names, "majority")
    got = {text.lower(): (names[label], provenance) for text, label, _, provenance in labels.values()}
    assert got["the plot is thin"] == ("negative", "feedback") and got["the cast is great"] == ("positive", "human")
    assert not [r for r in rejects if r.get("reason") == "conflicting_labels"]


def test_form_params_become_overrides_and_stop_after_skips_later_stages():
    params = {"recipe": "tiny", "pretrain": False, "base_model": "tiny-bert", "finetune_method": "lora",
              "epochs": 2, "promotion_margin": 0.01, "seeds": ["http://127.0.0.1:9/"], "overrides": ["annotate.seed=3"]}
    overrides = to_overrides(params)
    cfg = load_config("tiny", overrides)
    assert not cfg.pretrain.enabled and cfg.pretrain.base_model == "tiny-bert" and cfg.finetune.method == "lora"
    assert cfg.finetune.epochs == 2 and cfg.finetune.max_steps == 0 and cfg.evaluate.margin == 0.01
    assert cfg.collect.crawl.seeds == ["http://127.0.0.1:9/"] and cfg.annotate.seed == 3
    assert to_overrides({"recipe": "tiny"}) == []
    assert should_skip("finetune", {"stop_after": "gate_labels"}) == "stop_after=gate_labels"
    assert should_skip("gate_labels", {"stop_after": "gate_labels"}) is None
    spec = schema()
    assert set(spec["recipe"]["enum"]) >= {"demo", "tiny"} and spec["epochs"]["minimum"] > 0


def test_feedback_dag_emits_the_asset_event_that_schedules_the_pipeline(tmp_path):
    """Through Airflow (dag.test in a fresh home): enough corrections -> decide succeeds and the
    feedback-labels asset event carries the reason; too few -> decide is skipped, no event."""
    import subprocess

    from conftest import REPO, lmchain_cmd, subprocess_env

    lm_home = tmp_path / "home"
    env = subprocess_env(lm_home)
    store = ServingStore(f"sqlite:///{lm_home / 'serving' / 'store.db'}")
    _post(store, POSITIVE, "negative", "positive")
    store.close()
    run = subprocess.run(lmchain_cmd("feedback", "--recipe", "tiny", "--set", "feedback.min_new_labels=5"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "decide   success" in run.stdout
    assert "asset event lmchain_feedback_labels: 6 new or changed labels >= feedback.min_new_labels=5" in run.stdout
    quiet = subprocess.run(lmchain_cmd("feedback", "--recipe", "tiny", "--set", "feedback.min_new_labels=5"),
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "decide   skipped" in quiet.stdout and "asset event" not in quiet.stdout
    assert "decision: wait: waiting: 0 of 5 new labels" in quiet.stdout
