"""The launcher <-> rank protocol (typed job specs, error files) and the worker's pieces that need
no process group: no DeepSpeed job runs here."""

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from lmchain.config import FinetuneConfig, PretrainConfig
from lmchain.train import models
from lmchain.train.job import FinetuneJob, JobError, PretrainJob, read_errors, report_error, run_rank
from lmchain.train.launcher import build_job, failure, launcher_cmd, run_logged
from lmchain.train.worker import build_model, encode, final_metrics, make_collate, plan_steps, Progress

TINY = models.resolve("tiny-bert")


def _task(tmp_path: Path, **extra) -> dict:
    return {"task": "cls", **TINY, "train_file": str(tmp_path / "train.jsonl"), "validation_file": None,
            "label_names": ["neg", "pos"], "output_dir": str(tmp_path / "model"), **extra}


def test_a_job_is_typed_from_the_stage_settings_and_round_trips_as_json(tmp_path):
    cfg = FinetuneConfig(base_model="tiny-bert", learning_rate=3e-4, batch_size=4, patience=2)
    job = build_job(_task(tmp_path), cfg, tmp_path, FinetuneJob.worker, None, on_gpu=False)
    assert isinstance(job, FinetuneJob)
    assert (job.learning_rate, job.batch_size, job.patience, job.label_names) == (3e-4, 4, 2, ["neg", "pos"])
    assert job.ds_config["zero_optimization"]["stage"] == cfg.zero_stage and not job.ds_config["bf16"]["enabled"]
    assert job.error_file(1) == tmp_path / "errors" / "rank1.json"
    job.write(tmp_path / "spec.json")
    written = json.loads((tmp_path / "spec.json").read_text())
    assert written["worker"] == "lmchain.train.worker"
    assert "timeout_s" not in written and "hostfile" not in written  # the launcher's, not the rank's
    assert FinetuneJob.read(tmp_path / "spec.json") == job
    with pytest.raises(TypeError, match="job for 'lmchain.train.worker', not for lmchain.train.pretrain_worker"):
        PretrainJob.read(tmp_path / "spec.json")


def test_an_unknown_or_missing_job_field_fails_in_the_launcher_with_its_name(tmp_path):
    cfg = FinetuneConfig(base_model="tiny-bert")
    with pytest.raises(TypeError, match=r"unknown task field\(s\) \['train_fil'\]"):
        build_job({**_task(tmp_path), "train_fil": "x"}, cfg, tmp_path, FinetuneJob.worker, None, on_gpu=False)
    task = _task(tmp_path)
    del task["label_names"]
    with pytest.raises(TypeError, match=r"missing field\(s\) \['label_names'\]"):
        build_job(task, cfg, tmp_path, FinetuneJob.worker, None, on_gpu=False)
    # The pretraining job needs its own fields: a fine-tune's task fields do not make one.
    with pytest.raises(TypeError, match="PretrainJob: unknown task field"):
        build_job(_task(tmp_path), PretrainConfig(), tmp_path, PretrainJob.worker, None, on_gpu=False)


def _rank_program(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    job = build_job(_task(tmp_path), FinetuneConfig(base_model="tiny-bert"), tmp_path, FinetuneJob.worker, None,
                    on_gpu=False)
    job.write(tmp_path / "spec.json")
    script = tmp_path / "rank.py"
    script.write_text(
        "from lmchain.train.job import FinetuneJob, JobError, run_rank\n"
        f"def main(rank, job):\n    {body}\n"
        "run_rank(main, FinetuneJob)\n")
    return subprocess.run([sys.executable, str(script), "--spec", str(tmp_path / "spec.json"), "--local_rank=0"],
                          capture_output=True, text=True, env={**os.environ, "RANK": "3"}, timeout=120)


def test_a_rank_that_gives_up_writes_its_cause_as_not_retryable(tmp_path):
    proc = _rank_program(tmp_path, 'raise JobError("7 examples per rank is less than one batch of 8")')
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert read_errors(tmp_path / "errors") == [
        {"cause": "7 examples per rank is less than one batch of 8", "retryable": False, "rank": 3}]


def test_a_rank_that_crashes_writes_a_retryable_cause_and_keeps_its_traceback(tmp_path):
    proc = _rank_program(tmp_path, 'raise MemoryError("cannot allocate 9 GiB")')
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert read_errors(tmp_path / "errors") == [{"cause": "MemoryError: cannot allocate 9 GiB", "retryable": True,
                                                 "rank": 3}]
    (tmp_path / "ok").mkdir()
    ok = _rank_program(tmp_path / "ok", "return None")
    assert ok.returncode == 0 and read_errors(tmp_path / "ok" / "errors") == []


def test_the_launcher_decides_on_retries_from_error_files_not_from_log_text(tmp_path):
    log = tmp_path / "train.log"
    # A log line that looks like the old protocol decides nothing any more.
    tail = ["[lmchain.train error] looks bad", "[launch.py:1] ... exits with return code = -9"]
    killed = failure(1, [], tail, log)
    assert killed.retryable and "killed by signal 9 (SIGKILL)" in str(killed)
    # A rank's reported cause wins over the kill the launcher then sent to the other ranks.
    report_error(tmp_path / "errors" / "rank0.json", "a crash", retryable=True, rank=0)
    report_error(tmp_path / "errors" / "rank1.json", "checkpoint past max_steps", retryable=False, rank=1)
    errors = read_errors(tmp_path / "errors")
    assert [e["rank"] for e in errors] == [0, 1]
    stop = failure(1, errors, tail, log)
    assert not stop.retryable and "rank 1: checkpoint past max_steps" in str(stop)
    crashed = failure(1, errors[:1], ["Traceback", "RuntimeError: boom"], log)
    assert crashed.retryable and "rank 0: a crash" in str(crashed)
    nothing = failure(1, [], ["x", "RuntimeError: boom", "y"], log)
    assert nothing.retryable and "RuntimeError: boom" in str(nothing) and str(log) in str(nothing)


def test_run_logged_kills_the_whole_tree_on_timeout(tmp_path):
    from lmchain.train.launcher import TrainingFailed

    tail: deque[str] = deque(maxlen=5)
    code = run_logged([sys.executable, "-c", "print('hello')"], {}, tmp_path / "a.log", 30, tail)
    assert code == 0 and list(tail) == ["hello"] and (tmp_path / "a.log").read_text() == "hello\n"
    with pytest.raises(TrainingFailed, match="exceeded timeout_s=1s"):
        run_logged([sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "b.log", 1, tail)


def test_launcher_cmd_runs_one_rank_directly_and_several_under_deepspeed():
    one = launcher_cmd(FinetuneConfig(ranks=1), FinetuneJob.worker, Path("s.json"))
    assert one == [sys.executable, "-m", "lmchain.train.worker", "--spec", "s.json"]
    two = launcher_cmd(FinetuneConfig(ranks=2), FinetuneJob.worker, Path("s.json"))
    assert two[1:3] == ["-m", "deepspeed.launcher.runner"] and two[-4:] == ["--module", "lmchain.train.worker",
                                                                           "--spec", "s.json"]


def _job(tmp_path: Path, **settings) -> FinetuneJob:
    cfg = FinetuneConfig(base_model="tiny-bert", **settings)
    return build_job(_task(tmp_path), cfg, tmp_path, FinetuneJob.worker, None, on_gpu=False)


def test_worker_pieces_encode_plan_and_build_without_a_process_group(tmp_path):
    from transformers import AutoTokenizer

    job = _job(tmp_path, batch_size=4, epochs=2.5, word_dropout=0.5, seed=1)
    tok = AutoTokenizer.from_pretrained(job.tokenizer)
    rows = [{"text": f"a fine film number {i} " * (1 + i % 3), "label": i % 2} for i in range(10)]
    feats = encode(tok, rows, job)
    assert [f["labels"] for f in feats] == [r["label"] for r in rows]
    assert all(len(f["input_ids"]) <= job.max_length for f in feats)
    plan = plan_steps(job, [len(f["input_ids"]) for f in feats], len(feats))
    assert plan.steps_per_epoch == 2 and plan.total_steps == 5  # 10 // 4 full batches, 2.5 epochs
    assert sorted(i for b in plan.epoch_batches(0) for i in b) != []
    with pytest.raises(JobError, match="3 examples per rank is less than one batch of 4"):
        plan_steps(job, [5, 6, 7], 3)
    collate, pad = make_collate(tok, job, rank=0)
    dropped = collate([feats[i] for i in range(4)])
    full = pad([feats[i] for i in range(4)])
    assert dropped["input_ids"].shape[0] == 4 and dropped["attention_mask"].sum() < full["attention_mask"].sum()
    model, n_params, n_trainable = build_model(job)
    assert model.config.num_labels == 2 and model.config.id2label == {0: "neg", 1: "pos"}
    assert n_params == n_trainable > 0
    lora_job = _job(tmp_path, method="lora", lora_targets=["query", "value"])
    _, n_all, n_lora = build_model(lora_job)
    assert 0 < n_lora < n_all / 2


def test_final_metrics_report_the_best_validation_step(tmp_path):
    job = _job(tmp_path, batch_size=2)
    plan = plan_steps(job, [3, 4, 5, 6], 4)
    p = Progress(losses=[(1, 0.7), (2, 0.5)], curve=[(1, 0.6, 0.61), (2, 0.8, 0.79)], step=2, seen=8,
                 train_s=4.0, eval_s=2.0)
    m = final_metrics(p, plan, 2, 0.8, 1, "cpu", "fp32", 100, 100, {"report_accuracy": 0.7})
    assert (m["final_loss"], m["best_step"], m["best_accuracy"], m["samples_per_second"]) == (0.5, 2, 0.79, 4.0)
    assert m["report_accuracy"] == 0.7 and m["planned_steps"] == plan.total_steps and not m["stopped_early"]
