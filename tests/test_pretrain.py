"""Pretraining: tokenizer training and reuse, packed blocks sharded per rank, MLM and CLM as real
DeepSpeed jobs on CPU ranks (ZeRO-2), and resuming a SIGKILLed job from its checkpoint."""

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import sigkill_when, write_records
from lmchain import stages
from lmchain.config import PretrainConfig
from lmchain.errors import ConfigError
from lmchain.train import flops, packing, pretrain, tokenizer
from lmchain.train.launcher import TrainingFailed, launcher_cmd

WORDS = "good bad film plot actor boring great awful moving dull story cast music ending".split()


def _texts(n: int, offset: int = 0) -> list[dict]:
    # Seeded random word sequences: distinct blocks have distinct contents (so content digests
    # tell blocks apart), and the word distribution is there to be learnt (so the loss falls).
    rng = random.Random(offset)
    return [{"text": f"review {offset + i} : " + " ".join(rng.choice(WORDS) for _ in range(10))} for i in range(n)]


def _inputs(tmp_path: Path, n: int = 400, held: int = 40) -> dict:
    rows = _texts(n)
    val, test = rows[:held // 2], rows[held // 2:held]
    paths = {"validation": str(write_records(tmp_path / "validation.jsonl", val)),
             "test": str(write_records(tmp_path / "test.jsonl", test))}
    return {"gate": {"outputs": {"records": str(write_records(tmp_path / "corpus.jsonl", rows))}},
            "annotate": {"outputs": paths}}


# ------------------------------------------------------------------ tokenizer and packing


def test_tokenizer_is_trained_once_per_corpus_and_reused(tmp_path):
    corpus = write_records(tmp_path / "corpus.jsonl", _texts(300))
    cache = tmp_path / "cache"
    first, reused = tokenizer.trained_for(corpus, "wordpiece", 300, cache)
    assert not reused and (first / "tokenizer.json").is_file()
    again, reused = tokenizer.trained_for(corpus, "wordpiece", 300, cache)
    assert reused and again == first
    write_records(corpus, _texts(300, offset=1000))  # the corpus changed: a new tokenizer
    changed, reused = tokenizer.trained_for(corpus, "wordpiece", 300, cache)
    assert not reused and changed != first

    from transformers import AutoTokenizer

    wp = AutoTokenizer.from_pretrained(first)
    ids = wp("Boring FILM")["input_ids"]
    assert ids[0] == wp.cls_token_id and ids[-1] == wp.sep_token_id and wp.unk_token_id not in ids
    assert wp.decode(ids, skip_special_tokens=True) == "boring film"  # uncased WordPiece
    bpe_dir, _ = tokenizer.trained_for(corpus, "bpe", 300, cache, lowercase=False)
    bpe = AutoTokenizer.from_pretrained(bpe_dir)
    text = "a moving story, with music!"
    assert bpe.decode(bpe(text)["input_ids"]) == text  # byte-level: lossless
    assert bpe.eos_token == "<|endoftext|>"


def test_blocks_are_packed_and_each_rank_gets_a_distinct_share(tmp_path):
    corpus = write_records(tmp_path / "corpus.jsonl", _texts(300))
    tok_dir, _ = tokenizer.trained_for(corpus, "wordpiece", 300, tmp_path / "cache")
    meta = packing.pack(corpus, str(tok_dir), 32, tmp_path / "data", "mlm")
    blocks, meta2 = packing.load(tmp_path / "data")
    assert meta == meta2 and blocks.shape == (meta["n_blocks"], 32) and meta["n_blocks"] > 50
    assert meta["n_blocks"] * 30 + meta["dropped_tail_tokens"] == meta["tokens"]  # 30 text tokens per block
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert (blocks[:, 0] == tok.cls_token_id).all() and (blocks[:, -1] == tok.sep_token_id).all()
    assert tok.pad_token_id not in blocks  # packed: no padding at all

    n, world, bs = meta["n_blocks"], 2, 4
    per_epoch = packing.rank_share(n, world) // bs
    for epoch in range(2):
        seen = {r: np.concatenate([packing.micro_batch(n, 7, r, world, bs, epoch * per_epoch + i)
                                   for i in range(per_epoch)]) for r in range(world)}
        assert not set(seen[0]) & set(seen[1])  # ranks never share a block within an epoch
        assert len(set(seen[0])) == len(seen[0]) == per_epoch * bs
    # Deterministic (a resumed job sees what the killed one would have), reshuffled per epoch.
    assert (packing.micro_batch(n, 7, 1, world, bs, 3) == packing.micro_batch(n, 7, 1, world, bs, 3)).all()
    assert not (packing.micro_batch(n, 7, 0, world, bs, 0) == packing.micro_batch(n, 7, 0, world, bs, per_epoch)).all()


def test_mfu_and_launch_command():
    assert flops.gpu_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert flops.gpu_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert flops.gpu_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and flops.gpu_peak_tflops("cpu") is None
    per_token = flops.train_flops_per_token(85_000_000, 12, 768, 128, 30522)
    assert per_token == 6 * 85e6 + 6 * 768 * 30522 + 12 * 12 * 768 * 128
    assert flops.mfu(100_000, per_token, 1, 989.0) == pytest.approx(100_000 * per_token / 989e12)
    assert flops.mfu(100_000, per_token, 1, None) is None

    cmd = launcher_cmd(PretrainConfig(ranks=2), "lmchain.train.pretrain_worker", Path("spec.json"))
    assert cmd[cmd.index("--num_gpus") + 1] == "2" and "--hostfile" not in cmd
    assert cmd[cmd.index("--module") + 1] == "lmchain.train.pretrain_worker"


def test_multi_node_hostfile(tmp_path):
    hosts = tmp_path / "hostfile"
    hosts.write_text("worker-1 slots=8\nworker-2 slots=8\n# spare\nworker-3 slots=8\n")
    cfg = PretrainConfig(ranks=8, hostfile=str(hosts), num_nodes=2)
    cmd = launcher_cmd(cfg, "lmchain.train.pretrain_worker", Path("spec.json"))
    assert cmd[cmd.index("--hostfile") + 1] == str(hosts) and cmd[cmd.index("--num_nodes") + 1] == "2"
    assert "--master_addr" not in cmd  # the launcher asks the first host for its address
    assert pretrain.world_size(cfg) == 16
    with pytest.raises(ConfigError, match="pretrain.hostfile"):
        PretrainConfig(hostfile=str(tmp_path / "missing"))


def test_deepspeed_config_carries_the_schedule_and_accumulation():
    cfg = PretrainConfig(zero_stage=2, gradient_accumulation=4, gradient_clipping=0.5, warmup_ratio=0.1,
                         learning_rate=3e-4)
    ds = pretrain.deepspeed_config(cfg, on_gpu=True, steps=1000)
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] is True
    assert ds["scheduler"]["type"] == "WarmupDecayLR"
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 100 and ds["scheduler"]["params"]["total_num_steps"] == 1000
    assert ds["optimizer"]["params"]["lr"] == 3e-4
    assert pretrain.deepspeed_config(cfg, on_gpu=False, steps=10)["bf16"]["enabled"] is False
    with pytest.raises(ConfigError, match="pretrain.batch_size"):
        pretrain.total_steps(PretrainConfig(batch_size=64, max_steps=5), n_blocks=100, world=2)


# ------------------------------------------------------------------ the DeepSpeed jobs


def _seen(work: Path) -> dict[int, list[tuple[int, set[int], set[str]]]]:
    """rank -> [(step, block indices, block digests)], the last record of each step (a resumed
    attempt rewrites the steps after its checkpoint)."""
    out = {}
    for path in sorted((work / "seen").glob("rank*.tsv")):
        by_step = {}
        for line in path.read_text().splitlines():
            step, micro, idx, digests = line.split("\t")
            by_step[(int(step), int(micro))] = (int(step), {int(i) for i in idx.split(",")}, set(digests.split(",")))
        out[int(path.stem[4:])] = [by_step[k] for k in sorted(by_step)]
    return out


@pytest.mark.parametrize("size,objective", [("tiny-bert", "mlm"), ("tiny-gpt2", "clm")])
def test_two_cpu_ranks_zero2_pretrain(ctx, tmp_path, monkeypatch, size, objective):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    # Blocks of 16 tokens: 14 steps stay within one epoch (each rank's share is fresh blocks).
    cfg = PretrainConfig(base_model=size, ranks=2, zero_stage=2, batch_size=8, block_size=16, max_steps=14,
                         learning_rate=2e-3, warmup_ratio=0.1, tokenizer_vocab_size=400, checkpoint_every=5)
    m = stages.pretrain.run(cfg, ctx, _inputs(tmp_path))
    assert m.info["objective"] == objective and m.info["world_size"] == 2 and m.info["steps"] == 14
    assert m.info["tokenizer"]["trained"] and m.counts["held_out_texts"] == 40 and m.counts["texts"] == 360

    # The loss decreases (means of the first and last three steps, over both ranks).
    losses = [loss for _, loss in json.loads((ctx.stage_dir("pretrain") / "job" / "metrics.json").read_text())["losses"]]
    assert len(losses) == 14
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses

    # Each rank saw different data: no block (by index or by content) on both ranks.
    seen = _seen(Path(m.info["work_dir"]))
    assert sorted(seen) == [0, 1] and len(seen[0]) == len(seen[1]) == 14
    idx = {r: set().union(*(i for _, i, _ in rows)) for r, rows in seen.items()}
    digests = {r: set().union(*(d for _, _, d in rows)) for r, rows in seen.items()}
    assert len(idx[0]) == 14 * 8 and not idx[0] & idx[1] and not digests[0] & digests[1]

    # A Hugging Face export with its tokenizer, scored on the held-out texts.
    model_dir = ctx.stage_dir("pretrain") / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(model_dir).model_type == ("bert" if objective == "mlm" else "gpt2")
    assert 1.0 < m.metrics["perplexity"] < 400
    # Held-out perplexity at step 0 (the job's freshly built model) and after training: it fell.
    assert m.metrics["perplexity"] < m.metrics["perplexity_before"]
    accuracy = "mlm_accuracy" if objective == "mlm" else "next_token_accuracy"
    assert 0.0 <= m.metrics[f"{accuracy}_before"] <= 1.0
    assert not (Path(m.info["work_dir"]) / "initial").exists()  # the step-0 model is gone once measured
    assert 0.0 < m.metrics[accuracy] <= 1.0 and m.metrics["tokens_per_second"] > 0
    assert not (Path(m.info["work_dir"]) / "checkpoints").exists()  # removed once the export exists

    from lmchain import registry

    run = registry.client(ctx.home).get_run(m.info["mlflow_run_id"])
    assert run.data.params["pretrain.objective"] == objective and run.data.params["pretrain.zero_stage"] == "2"
    for key in ("pretrain/loss", "pretrain/tokens_per_second", "pretrain/perplexity", f"pretrain/{accuracy}",
                "pretrain/perplexity_before", f"pretrain/{accuracy}_before"):
        assert key in run.data.metrics, key
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(run.data.metrics)
    assert "n/a on cpu" in run.data.tags["pretrain.mfu"]


def test_a_checkpoint_without_an_lm_head_gets_one_fitted_before_continued_pretraining(ctx, tmp_path):
    """Like the packaged MiniLM (a sentence-transformer saved as a BertModel): no cls.* weights. Under
    ZeRO-3, so the export consolidated from the shards carries the new head too."""
    import math

    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, BertModel

    from lmchain.train.models import TINY_BERT, packaged_minilm

    base = tmp_path / "encoder"
    torch.manual_seed(0)
    BertModel(AutoConfig.for_model(**TINY_BERT)).save_pretrained(base)
    AutoTokenizer.from_pretrained(packaged_minilm()).save_pretrained(base)
    cfg = PretrainConfig(base_model=str(base), ranks=2, zero_stage=3, batch_size=8, block_size=16, max_steps=4,
                         head_warmup_steps=30, head_warmup_learning_rate=3e-2, allow_worse_perplexity=True)
    m = stages.pretrain.run(cfg, ctx, _inputs(tmp_path))
    assert "cls.predictions.transform.dense.weight" in m.info["head_missing_keys"] and m.info["head_tied"]
    assert m.info["head_warmup_steps"] == 30
    metrics = json.loads((ctx.stage_dir("pretrain") / "job" / "metrics.json").read_text())
    # The head (bias from the corpus, then fitted) is far below a uniform guess over the vocabulary
    # from its first warm-up step on, and so is continued pretraining's first loss.
    vocab = len(AutoTokenizer.from_pretrained(base))
    warm = [loss for _, loss in metrics["head_warmup_losses"]]
    assert len(warm) >= 2 and max(warm) < 0.5 * math.log(vocab), warm
    assert metrics["first_loss"] < 0.5 * math.log(vocab), metrics["losses"]
    assert m.metrics["perplexity_before"] < 0.5 * vocab and m.metrics["perplexity"] < 0.5 * vocab
    # The export holds the head, tied to the embeddings.
    export = AutoModelForMaskedLM.from_pretrained(ctx.stage_dir("pretrain") / "model")
    assert export.cls.predictions.decoder.weight is export.bert.embeddings.word_embeddings.weight


STEPS = 48


def test_sigkilled_job_resumes_from_its_checkpoint(ctx, tmp_path):
    cfg = PretrainConfig(base_model="tiny-bert", ranks=2, zero_stage=2, batch_size=8, block_size=32,
                         max_steps=STEPS, learning_rate=1e-3, tokenizer_vocab_size=400, checkpoint_every=4,
                         keep_checkpoints=2)
    inputs = _inputs(tmp_path)
    killed: list[int] = []
    # SIGKILL rank 1 once a checkpoint is published (mid-run).
    work_root = ctx.run_dir / "pretrain.work"
    watcher = threading.Thread(target=sigkill_when, daemon=True,
                               args=(killed, "lmchain.train.pretrain_worker", "--local_rank=1", str(ctx.home)),
                               kwargs={"ready": lambda: any(work_root.glob("*/checkpoints/latest"))})
    watcher.start()
    with pytest.raises(TrainingFailed) as failure:
        stages.pretrain.run(cfg, ctx, inputs)
    watcher.join(timeout=5)
    assert killed and failure.value.retryable  # a killed rank is worth a retry; a bad setting is not
    assert "killed by signal 9 (SIGKILL)" in str(failure.value) and "last lines of the log" in str(failure.value)
    (work,) = (ctx.run_dir / "pretrain.work").iterdir()
    ckpt = work / "checkpoints"
    saved = int((ckpt / "latest").read_text().strip()[4:])
    assert 4 <= saved < STEPS and saved % 4 == 0
    # `latest` names a complete folder; the only half-written one is the save the kill interrupted.
    latest = ckpt / (ckpt / "latest").read_text().strip()
    assert latest.is_dir() and not latest.name.endswith(".partial")
    assert all(int(p.name[4:].split(".")[0]) > saved for p in ckpt.glob("*.partial"))
    assert len([p for p in ckpt.glob("step*") if p.is_dir() and not p.name.endswith(".partial")]) <= 2  # pruned

    m = stages.pretrain.run(cfg, ctx, inputs)  # the retry
    assert m.info["resumed_from_step"] == saved and m.info["steps"] == STEPS
    metrics = json.loads((ctx.stage_dir("pretrain") / "job" / "metrics.json").read_text())
    assert metrics["steps_this_attempt"] == STEPS - saved
    steps_logged = [s for s, _ in metrics["losses"]]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == STEPS  # one curve, no restart
    # The data position was restored: steps after the checkpoint took the blocks the killed run
    # would have (the seen log holds both attempts), and the two ranks still never overlap.
    seen = _seen(work)
    assert [s for s, _, _ in seen[0]] == [s for s, _, _ in seen[1]] == list(range(1, STEPS + 1))
    n_blocks = json.loads((work / "data" / "blocks.json").read_text())["n_blocks"]
    per_epoch = packing.rank_share(n_blocks, 2) // 8
    for epoch in range(STEPS // per_epoch):
        share = [set().union(*(i for s, i, _ in seen[r] if (s - 1) // per_epoch == epoch)) for r in (0, 1)]
        assert len(share[0]) == per_epoch * 8 and not share[0] & share[1]
    for step, idx, _ in seen[1][saved:saved + 3]:
        assert idx == set(packing.micro_batch(n_blocks, cfg.seed, 1, 2, 8, step - 1).tolist())
