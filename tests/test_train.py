"""The real DeepSpeed path: the launcher starts CPU ranks (gloo) that train a tiny BERT."""

import json

import pytest

from conftest import write_records
from lmchain.config import FinetuneConfig, PretrainConfig
from lmchain.stages import finetune, pretrain
from lmchain.train.launcher import TrainingFailed

WORDS = "good bad film plot actor boring great awful moving dull".split()


def _labelled(tmp_path, n=96):
    rows = [{"id": str(i), "text": f"review {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(6)),
             "label": i % 2}
            for i in range(n)]
    paths = {}
    for split, part in (("train", rows[:64]), ("validation", rows[64:80]), ("test", rows[80:])):
        paths[split] = str(write_records(tmp_path / f"{split}.jsonl", part))
    (tmp_path / "labels.json").write_text(json.dumps({"names": ["neg", "pos"]}))
    paths["labels"] = str(tmp_path / "labels.json")
    corpus = write_records(tmp_path / "corpus.jsonl", rows)
    return {"gate": {"outputs": {"records": str(corpus)}}, "annotate": {"outputs": paths}}


def test_pretrain_two_cpu_ranks_then_finetune(ctx, tmp_path):
    # ZeRO-0 (plain data parallel): ZeRO-2 pretraining is tests/test_pretrain.py's, and the tiny
    # recipe of the end-to-end test pretrains with ZeRO-2 then fine-tunes.
    inputs = _labelled(tmp_path)
    m = pretrain.run(PretrainConfig(base_model="tiny-bert", ranks=2, zero_stage=0, batch_size=8,
                                    block_size=16, max_steps=3), ctx, inputs)
    assert m.info["world_size"] == 2 and m.info["device"] == "cpu" and m.info["steps"] == 3
    assert (m.counts["texts"], m.counts["held_out_texts"]) == (64, 32)  # validation + test text kept out
    # Held-out LM metrics on the validation texts; an untrained-size model is near-uniform.
    assert 1.0 < m.metrics["perplexity"] < 2 * 30522 and 0.0 <= m.metrics["mlm_accuracy"] <= 1.0
    model_dir = ctx.stage_dir("pretrain") / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert (model_dir / "tokenizer.json").is_file()
    log = (ctx.stage_dir("pretrain") / "job" / "train.log").read_text()
    assert "2 rank(s) on cpu" in log

    ft = finetune.run(FinetuneConfig(base_model="pretrain", ranks=1, batch_size=8, max_steps=2), ctx,
                      {"pretrain": m.to_dict(), **inputs})
    assert ft.info["label_names"] == ["neg", "pos"] and ft.metrics["final_loss"] > 0
    cfg = json.loads((ctx.stage_dir("finetune") / "model" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "neg", "1": "pos"}


def test_training_failure_is_reported_with_the_cause(ctx, tmp_path):
    inputs = _labelled(tmp_path)
    with pytest.raises(TrainingFailed, match="less than one batch of 500"):
        finetune.run(FinetuneConfig(base_model="tiny-bert", ranks=1, batch_size=500, max_steps=1), ctx, inputs)
    assert not ctx.stage_dir("finetune").exists()


def test_timeout_kills_the_whole_job(ctx, tmp_path):
    import psutil

    inputs = _labelled(tmp_path)
    with pytest.raises(TrainingFailed, match="exceeded timeout_s=1s"):
        finetune.run(FinetuneConfig(base_model="tiny-bert", ranks=2, batch_size=8, max_steps=50, timeout_s=1),
                     ctx, inputs)
    # Only this test's job: other training jobs may run on the machine at the same time.
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if "lmchain.train.worker" in (cmd := " ".join(p.info["cmdline"] or [])) and str(tmp_path) in cmd]
    assert leftovers == []


def test_a_killed_single_rank_job_is_retryable_and_says_so(ctx, tmp_path):
    """One rank starts without the deepspeed launcher; a SIGKILL still reads as a kill, worth a retry."""
    import sys
    import threading
    from pathlib import Path

    from conftest import sigkill_when
    from lmchain.train.launcher import launcher_cmd

    assert launcher_cmd(FinetuneConfig(ranks=1), "lmchain.train.worker", Path("s.json")) == [
        sys.executable, "-m", "lmchain.train.worker", "--spec", "s.json"]
    killed: list[int] = []
    watcher = threading.Thread(target=sigkill_when, args=(killed, "lmchain.train.worker", str(tmp_path)),
                               kwargs={"delay": 2, "timeout": 300}, daemon=True)
    watcher.start()
    with pytest.raises(TrainingFailed) as failure:
        finetune.run(FinetuneConfig(base_model="tiny-bert", ranks=1, batch_size=8, max_steps=100000), ctx,
                     _labelled(tmp_path))
    watcher.join(timeout=5)
    assert killed and failure.value.retryable
    assert "killed by signal 9 (SIGKILL)" in str(failure.value)
