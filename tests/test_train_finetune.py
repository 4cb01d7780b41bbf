"""Fine-tuning a tiny BERT on CPU ranks through the real DeepSpeed path: it learns, keeps the
best validation checkpoint, stops early, trains LoRA adapters and logs curves to MLflow."""

import json
import random

import pytest
import tiny_models

from conftest import write_records
from lmchain.config import FinetuneConfig, LabelSource
from lmchain.stages import finetune

FILLER = "the a film plot actor movie story scene cast some was quite".split()


def _sentences(n, seed, flip=False):
    """Label 1 iff the text says 'great' (else 'awful'), among filler words of varied length."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER, k=rng.randint(2, 14))
        words.insert(rng.randint(0, len(words)), "great" if label else "awful")
        rows.append({"id": f"{seed}-{i}", "text": " ".join(words), "label": 1 - label if flip else label})
    return rows


def _inputs(tmp_path, flip_validation=False):
    paths = {"train": str(write_records(tmp_path / "train.jsonl", _sentences(256, 1))),
             "validation": str(write_records(tmp_path / "validation.jsonl", _sentences(64, 2, flip_validation))),
             "test": str(write_records(tmp_path / "test.jsonl", _sentences(32, 3)))}
    (tmp_path / "labels.json").write_text(json.dumps({"names": ["neg", "pos"]}))
    paths["labels"] = str(tmp_path / "labels.json")
    return {"annotate": {"outputs": paths}}


def _tiny(**kw):
    base = dict(base_model="tiny-bert", ranks=1, batch_size=16, learning_rate=3e-3, epochs=3, eval_every=8,
                patience=0, warmup_ratio=0.1)
    return FinetuneConfig(**{**base, **kw})


def _score(model_dir, rows):
    """Accuracy of a saved model folder, computed here without any lmchain code."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        enc = tok([r["text"] for r in rows], padding=True, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1).tolist()
    return sum(p == r["label"] for p, r in zip(pred, rows)) / len(rows)


def test_tiny_finetune_learns_and_scores_a_report_file(ctx, tmp_path):
    report = tmp_path / "report.tsv"
    report.write_text("sentence\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in _sentences(40, 4)))
    cfg = _tiny(report_on=LabelSource(path=str(report), text_field="sentence"), lr_schedule="cosine",
                class_weights="balanced", word_dropout=0.05, dropout=0.0)
    m = finetune.run(cfg, ctx, _inputs(tmp_path))
    assert m.metrics["best_accuracy"] >= 0.9 and m.metrics["best_macro_f1"] >= 0.9
    assert m.metrics["report_accuracy"] >= 0.9
    model_dir = ctx.stage_dir("finetune") / "model"
    assert _score(model_dir, _sentences(40, 4)) == pytest.approx(m.metrics["report_accuracy"], abs=0.03)
    assert m.info["method"] == "full" and m.info["trainable_parameters"] > 2_000_000
    assert json.loads((model_dir / "config.json").read_text())["hidden_dropout_prob"] == 0.0

    from lmchain import registry

    history = registry.client(ctx.home).get_metric_history(m.info["mlflow_run_id"], "finetune/val_macro_f1")
    assert [h.step for h in history] == [8, 16, 24, 32, 40, 48]


def test_best_checkpoint_is_restored_when_later_ones_are_worse(ctx, tmp_path):
    # Validation labels are the opposite of the training rule: the better the model learns
    # the training data, the worse it scores, so the first evaluation is the best one.
    inputs = _inputs(tmp_path, flip_validation=True)
    m = finetune.run(_tiny(eval_every=4, epochs=2), ctx, inputs)
    curve = json.loads((ctx.stage_dir("finetune") / "job" / "metrics.json").read_text())["validation_curve"]
    best_step, best_f1 = m.info["best_step"], m.metrics["best_macro_f1"]
    assert best_step < curve[-1][0] and curve[-1][1] < best_f1 - 0.2
    assert best_f1 == max(f1 for _, f1, _ in curve)
    # The saved weights are the best step's: they score its validation accuracy, not the last one's.
    val_rows = _sentences(64, 2, flip=True)
    assert _score(ctx.stage_dir("finetune") / "model", val_rows) == pytest.approx(m.metrics["best_accuracy"],
                                                                                  abs=0.05)


def test_early_stopping_ends_the_run(ctx, tmp_path):
    m = finetune.run(_tiny(eval_every=2, epochs=4, patience=2), ctx, _inputs(tmp_path, flip_validation=True))
    metrics = json.loads((ctx.stage_dir("finetune") / "job" / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and m.info["steps"] < metrics["planned_steps"]
    assert len(metrics["validation_curve"]) == (m.info["steps"] // 2)


def test_a_recipe_that_sets_no_epochs_gets_epochs_chosen_by_validation(ctx, tmp_path):
    # Only the model and its learning rate: epochs, eval_every and patience are the defaults. The
    # task is learnt within an epoch or two, so validation stops improving long before the
    # upper bound and the run stops `patience` epochs after its best one.
    cfg = FinetuneConfig(base_model="tiny-bert", ranks=1, batch_size=16, learning_rate=3e-3, warmup_ratio=0.1)
    assert (cfg.epochs, cfg.max_steps, cfg.eval_every, cfg.patience) == (10.0, 0, 0, 3)
    # tests/tiny_models.py's sentiment words, short and long texts: 4 steps an epoch.
    inputs = _inputs(tmp_path)
    write_records(tmp_path / "train.jsonl", tiny_models.dataset(32, 32))
    write_records(tmp_path / "validation.jsonl", tiny_models.dataset(16, 16, offset=64))
    m = finetune.run(cfg, ctx, inputs)
    metrics = json.loads((ctx.stage_dir("finetune") / "job" / "metrics.json").read_text())
    per_epoch = metrics["steps_per_epoch"]
    assert per_epoch == 64 // 16 and metrics["planned_steps"] == 10 * per_epoch
    # Scored once per epoch; stopped by patience, well before the tenth epoch.
    assert [s for s, _, _ in metrics["validation_curve"]] == [per_epoch * (e + 1) for e in range(m.info["steps"]
                                                                                             // per_epoch)]
    assert m.info["stop_reason"] == "patience" and m.info["stopped_early"] is True
    assert m.info["best_epoch"] == m.info["best_step"] / per_epoch and m.info["best_epoch"] == int(m.info["best_epoch"])
    assert m.info["epochs_run"] == m.info["best_epoch"] + cfg.patience < 10
    assert m.metrics["best_accuracy"] >= 0.9

    from lmchain import registry

    run = registry.client(ctx.home).get_run(m.info["mlflow_run_id"])
    assert run.data.tags["finetune.stop_reason"] == "patience"
    assert run.data.metrics["finetune/best_epoch"] == m.info["best_epoch"]


def test_lora_trains_few_weights_and_saves_a_plain_model(ctx, tmp_path):
    m = finetune.run(_tiny(method="lora", lora_r=4, learning_rate=1e-2, epochs=4), ctx, _inputs(tmp_path))
    assert m.info["method"] == "lora" and 0 < m.info["trainable_parameters"] < 300_000
    model_dir = ctx.stage_dir("finetune") / "model"
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert not any("lora" in k for k in keys) and any(k.startswith("classifier") for k in keys)
    assert m.metrics["best_accuracy"] >= 0.75


def test_two_ranks_zero3_score_validation_together_and_save_the_best(ctx, tmp_path):
    # ZeRO-3 partitions the weights: scoring, snapshot and restore are collective operations.
    m = finetune.run(_tiny(ranks=2, zero_stage=3, eval_every=8, epochs=6), ctx, _inputs(tmp_path))
    assert m.info["world_size"] == 2 and m.metrics["best_accuracy"] >= 0.9
    assert _score(ctx.stage_dir("finetune") / "model", _sentences(64, 2)) == pytest.approx(
        m.metrics["best_accuracy"], abs=0.05)


def test_weight_average_and_layer_decay_train_and_save_the_scored_average(ctx, tmp_path):
    inputs = _inputs(tmp_path)
    m = finetune.run(_tiny(ema_decay=0.9, layer_lr_decay=0.7, epochs=3), ctx, inputs)
    assert m.metrics["best_accuracy"] >= 0.9
    # The saved weights are the average validation scored, not the last step's training weights.
    rows = [json.loads(line) for line in open(inputs["annotate"]["outputs"]["validation"])]
    assert _score(ctx.stage_dir("finetune") / "model", rows) == pytest.approx(m.metrics["best_accuracy"], abs=1 / 64)
