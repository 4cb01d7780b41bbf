"""One pretraining rank (MLM or CLM), launched by the ``deepspeed`` launcher; never imported by a DAG.

Reads the :class:`~lmchain.train.job.PretrainJob` that :mod:`lmchain.stages.pretrain` hands the
launcher, then: setup -> data -> model -> head (a checkpoint without an LM head gets one tied to
its embeddings and fitted with the encoder frozen, see :mod:`lmchain.train.head`; the model as it
stands then is saved as the step-0 baseline) -> engine (optimizer, warm-up schedule, ZeRO and
precision all from the DeepSpeed config) -> resume -> loop -> export. The data are packed blocks
memory-mapped by every rank; the blocks of step s on rank r are a function of (seed, s, r) alone
(see :mod:`lmchain.train.packing`), and so is the masking, so a job resumed from a checkpoint
continues exactly where the killed one would have gone. Each rank appends the digests of the
blocks it trains on to ``seen/rank<r>.tsv`` (how tests check that ranks see distinct data). Rank 0
writes ``metrics.json``; MLflow logging happens in the parent task, so ranks need no tracking
server.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from lmchain.train.job import JobError, PretrainJob, run_rank


def mask_tokens(input_ids, special, mask_id: int, vocab_size: int, job: PretrainJob, generator):
    """BERT masking: pick ``mlm_probability`` of the non-special tokens as targets; of those,
    ``mask_token_prob`` become [MASK], ``random_token_prob`` a random token, the rest stay."""
    import torch

    labels = input_ids.clone()
    probs = torch.full(input_ids.shape, job.mlm_probability)
    probs.masked_fill_(special, 0.0)
    targets = torch.bernoulli(probs, generator=generator).bool()
    labels[~targets] = -100
    draw = torch.rand(input_ids.shape, generator=generator)
    to_mask = targets & (draw < job.mask_token_prob)
    to_random = targets & ~to_mask & (draw < job.mask_token_prob + job.random_token_prob)
    inputs = input_ids.clone()
    inputs[to_mask] = mask_id
    inputs[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[to_random]
    return inputs, labels


def open_seen_log(path: Path, start: int):
    """This rank's log of the blocks it trained on, cut back to the resumed checkpoint's step: a
    killed attempt may have logged later steps, or half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if len(fields) == 4 and fields[0].isdigit() and int(fields[0]) <= start:
                kept.append(line + "\n")
    path.write_text("".join(kept), encoding="utf-8")
    return open(path, "a", encoding="utf-8")


def main(_rank: int, job: PretrainJob) -> None:
    # ---------------------------------------------------------------- setup
    import deepspeed
    import numpy as np
    import torch

    from lmchain.train import checkpoint, flops, packing
    from lmchain.train.optim import decay_groups
    from lmchain.train.rank import init_rank

    r = init_rank(job)
    rank, world, local_rank, on_gpu, cpu_bf16, autocast, dist = (
        r.rank,
        r.world,
        r.local_rank,
        r.on_gpu,
        r.cpu_bf16,
        r.autocast,
        r.dist,
    )
    objective, seed = job.objective, job.seed
    log = r.logger(objective)

    # ---------------------------------------------------------------- data
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer)
    blocks, meta = packing.load(job.data_dir)
    micro_bs = job.batch_size
    accum = job.ds_config["gradient_accumulation_steps"]
    micro_per_epoch = packing.rank_share(meta["n_blocks"], world) // micro_bs
    if micro_per_epoch < accum:
        raise JobError(
            f"{meta['n_blocks']} blocks of {meta['block_size']} tokens over {world} rank(s) "
            f"is less than one optimizer step ({accum} micro-batch(es) of {micro_bs} per rank); lower "
            "batch_size, gradient_accumulation, block_size or ranks, or give more text"
        )
    steps_per_epoch = micro_per_epoch // accum
    total_steps = job.max_steps or max(1, math.ceil(steps_per_epoch * job.epochs))
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    vocab_size = len(tokenizer)

    def batch_for(step: int, micro: int) -> tuple[dict, np.ndarray]:
        """Inputs of rank ``rank``'s ``micro``-th micro-batch of optimizer step ``step`` (1-based)."""
        idx = packing.micro_batch(meta["n_blocks"], seed, rank, world, micro_bs, (step - 1) * accum + micro)
        ids = torch.from_numpy(blocks[np.sort(idx)].astype(np.int64))  # sorted: sequential mmap reads
        if objective == "clm":
            return {"input_ids": ids, "labels": ids}, idx
        # Masking drawn from (seed, step, micro, rank): the same on a resumed attempt.
        gen = torch.Generator().manual_seed(hash((seed, step, micro, rank)) & 0x7FFF_FFFF_FFFF_FFFF)
        inputs, labels = mask_tokens(ids, torch.isin(ids, special_ids), tokenizer.mask_token_id, vocab_size, job, gen)
        return {"input_ids": inputs, "labels": labels, "attention_mask": torch.ones_like(ids)}, idx

    # ---------------------------------------------------------------- model
    model, missing = build_model(job, tokenizer)
    ckpt_root = Path(job.checkpoint_dir)
    resuming = checkpoint.latest_tag(ckpt_root) is not None  # the checkpoint holds the fitted head
    head_record = prepare_head(job, model, missing, blocks, special_ids, resuming, r, batch_for, accum, log)
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = train_flops(model, meta["block_size"], vocab_size)

    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=decay_groups(model.named_parameters(), job.weight_decay), config=job.ds_config
    )
    zero_stage = job.ds_config["zero_optimization"]["stage"]

    # ---------------------------------------------------------------- resume
    tag, state = checkpoint.resume(engine, ckpt_root)
    start = int(state.get("step", 0))
    losses: list[list[float]] = state.get("losses", [])
    tokens_before, seconds_before = int(state.get("tokens", 0)), float(state.get("train_seconds", 0.0))
    if tag:
        log(
            f"resumed from checkpoint {ckpt_root / tag}: step {start}/{total_steps}, "
            f"{state.get('micro_batches', 0)} micro-batches per rank consumed, lr {scheduler.get_last_lr()[0]:.2e}"
        )
        if start > total_steps:
            raise JobError(
                f"checkpoint {ckpt_root / tag} is at step {start}, past max_steps "
                f"{total_steps}; delete {ckpt_root} to start over"
            )
    log(
        f"model {job.model or job.size}: {n_params / 1e6:.1f}M parameters, {world} rank(s) on "
        f"{'cuda' if on_gpu else 'cpu'}{' bf16 autocast' if cpu_bf16 else ''}, DeepSpeed ZeRO-{zero_stage}, "
        f"{torch.get_num_threads()} thread(s)/rank; {meta['n_blocks']} blocks of {meta['block_size']} tokens, "
        f"{micro_bs} x {accum} per rank per step, {steps_per_epoch} steps/epoch, {total_steps} steps"
    )

    # ---------------------------------------------------------------- loop
    seen = open_seen_log(Path(job.seen_dir) / f"rank{rank}.tsv", start)
    every = job.checkpoint_every
    log_every = max(1, min(job.log_every or total_steps // 20 or 1, total_steps))
    tokens_per_step = micro_bs * accum * world * meta["block_size"]
    engine.train()
    t0 = time.perf_counter()
    window_loss = torch.zeros(1, device=engine.device)  # summed on the device: no sync per step
    window_steps = 0
    for step in range(start + 1, total_steps + 1):
        for micro in range(accum):
            batch, idx = batch_for(step, micro)
            seen.write(
                f"{step}\t{micro}\t{','.join(map(str, idx.tolist()))}\t"
                f"{','.join(packing.block_digest(blocks[i]) for i in idx)}\n"
            )
            with autocast():
                loss = engine(**{k: v.to(engine.device) for k, v in batch.items()}).loss
            engine.backward(loss)
            engine.step()  # DeepSpeed steps the optimizer and scheduler at the accumulation boundary
            window_loss += loss.detach().float() / accum
        window_steps += 1
        if step % log_every == 0 or step == total_steps:
            summed = window_loss.clone()
            dist.all_reduce(summed)
            mean = summed.item() / world / window_steps  # steps since the last log line (or the resume)
            losses.append([step, mean])
            log(
                f"step {step}/{total_steps} loss {mean:.4f} lr {scheduler.get_last_lr()[0]:.2e} "
                f"{(step - start) * tokens_per_step / (time.perf_counter() - t0):.0f} tokens/s"
            )
            window_loss.zero_()
            window_steps = 0
        # The last step's checkpoint is needed only to consolidate ZeRO-3 shards for the export.
        if (every and step % every == 0 and step < total_steps) or (step == total_steps and zero_stage == 3):
            seen.flush()
            elapsed = seconds_before + time.perf_counter() - t0
            client = {
                "step": step,
                "micro_batches": step * accum,
                "epoch": (step * accum) // micro_per_epoch,
                "losses": losses,
                "tokens": tokens_before + (step - start) * tokens_per_step,
                "train_seconds": elapsed,
            }
            saved = checkpoint.save(
                engine,
                ckpt_root,
                step,
                client,
                job.keep_checkpoints,
                is_local_leader=local_rank == 0,
                barrier=dist.barrier,
            )
            log(f"checkpoint {ckpt_root / saved}")
    seen.close()
    if on_gpu:
        torch.cuda.synchronize()
    # This attempt's own throughput (a resumed attempt's earlier part ran at another time).
    train_s = time.perf_counter() - t0
    steps_run = total_steps - start
    tokens_run = steps_run * tokens_per_step

    # ---------------------------------------------------------------- export
    out = Path(job.output_dir)
    final_tag = checkpoint.latest_tag(ckpt_root)
    if rank == 0:
        # ZeRO-3: no rank holds the whole model: consolidate the saved shards.
        if zero_stage == 3:
            assert final_tag is not None  # under ZeRO-3 the last step always saves a checkpoint (above)
            export = consolidated(job, engine.module.config, ckpt_root, final_tag, vocab_size)
        else:
            export = engine.module
        export.save_pretrained(out, state_dict={k: v.float() for k, v in export.state_dict().items()})
        tokenizer.save_pretrained(out)
        tok_s = tokens_run / train_s if steps_run else 0.0
        peak = job.peak_tflops or (flops.gpu_peak_tflops(torch.cuda.get_device_name()) if on_gpu else None)
        util = flops.mfu(tok_s, flops_per_token, world, peak)
        metrics = {
            "objective": objective,
            "losses": losses,
            "first_loss": losses[0][1] if losses else None,
            "final_loss": losses[-1][1] if losses else None,
            "steps": total_steps,
            "resumed_from_step": start,
            "steps_this_attempt": steps_run,
            "train_seconds": round(train_s, 2),
            "train_seconds_all_attempts": round(seconds_before + train_s, 2),
            "tokens_per_second": round(tok_s, 1),
            "samples_per_second": round(tok_s / meta["block_size"], 2),
            "tokens": tokens_before + tokens_run,
            "flops_per_token": flops_per_token,
            "peak_tflops_per_device": peak,
            "mfu": util,
            "world_size": world,
            "device": "cuda" if on_gpu else "cpu",
            "device_name": torch.cuda.get_device_name() if on_gpu else "cpu",
            "parameters": n_params,
            "zero_stage": zero_stage,
            "final_checkpoint": final_tag,
            "precision": "bf16" if (on_gpu or cpu_bf16) else "fp32",
            "block_size": meta["block_size"],
            "vocab_size": vocab_size,
            **head_record,
        }
        Path(job.metrics_file).write_text(json.dumps(metrics, indent=2))
        log(
            f"saved {out}: {metrics['tokens_per_second']:.0f} tokens/s"
            f"{f', MFU {util:.1%} of {peak:g} TFLOP/s x {world}' if util is not None else ''}"
        )
    dist.barrier()


def prepare_head(job: PretrainJob, model, missing, blocks, special_ids, resuming: bool, r, batch_for, accum, log):
    """Give a checkpoint without an LM head a real one (tied decoder, corpus bias, a warm-up with
    the encoder frozen), then save the model as it stands -- step 0 of continued pretraining -- to
    ``job.initial_dir``, where the stage measures held-out perplexity before training. A resumed
    attempt ties the decoder but skips the warm-up and the save (its checkpoint holds the fitted
    head; the first attempt saved step 0), and reads back the first attempt's record.
    -> the head's record for ``metrics.json``."""
    import itertools

    import torch

    from lmchain.train import head

    initial = Path(job.initial_dir) if job.initial_dir else None
    record_file = initial / "lmchain-head.json" if initial else None
    # Tied on a resumed attempt too: the checkpoint's parameters are those of the tied model.
    missing_head = head.head_missing_keys(model, missing)
    untrained = head.init_head(model, missing, blocks, special_ids.tolist())
    if resuming and record_file is not None and record_file.is_file():
        return json.loads(record_file.read_text())
    record: dict = {
        "head_missing_keys": missing_head,
        "head_tied": bool(missing_head) and head.decoder_tied(model),
        "head_warmup_steps": 0,
        "head_warmup_losses": [],
        "head_warmup_seconds": 0.0,
    }
    if missing_head:
        log(
            f"the checkpoint has no LM head ({len(missing_head)} missing key(s), e.g. {missing_head[0]}): decoder "
            f"{'tied to the input embeddings' if record['head_tied'] else 'untied'}, bias from the corpus' "
            f"token frequencies; {sum(p.numel() for p in untrained.values())} untrained head parameters"
        )
    if resuming:
        return record
    if untrained and job.head_warmup_steps > 0:
        model.to(r.device)
        for p in untrained.values():  # the ranks start from one head (rank 0's random init)
            r.dist.broadcast(p.data, 0)
        batches = (
            {k: v.to(r.device) for k, v in batch_for(1 + i // accum, i % accum)[0].items()} for i in itertools.count()
        )
        t0 = time.perf_counter()
        losses = head.warm_up(
            model,
            untrained,
            batches,
            job.head_warmup_steps,
            job.head_warmup_learning_rate,
            job.objective,
            all_reduce=r.dist.all_reduce,
            world=r.world,
            log=log,
        )
        if r.on_gpu:
            torch.cuda.synchronize()
        record.update(
            head_warmup_steps=job.head_warmup_steps,
            head_warmup_losses=losses,
            head_warmup_seconds=round(time.perf_counter() - t0, 2),
        )
    if initial is not None and r.rank == 0:
        save_initial(model, job.tokenizer, initial, record)
    return record


def save_initial(model, tokenizer_dir: str, folder: Path, record: dict) -> None:
    """Write the step-0 model (with its tokenizer and the head's record) to ``folder``, atomically."""
    import shutil

    from transformers import AutoTokenizer

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict={k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
    (tmp / "lmchain-head.json").write_text(json.dumps(record, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def build_model(job: PretrainJob, tokenizer):
    """The model to pretrain: continued from ``job.model`` (e.g. domain-adaptive pretraining of
    MiniLM) or a named size from scratch, with the vocabulary of the tokenizer it trains with.
    -> (model, the keys the checkpoint lacked: how a missing LM head is found; [] from scratch)."""
    from transformers import AutoConfig

    auto = auto_class(job)
    vocab_size = len(tokenizer)
    missing: list[str] = []
    if job.model:
        model, info = auto.from_pretrained(job.model, output_loading_info=True)
        missing = sorted(info["missing_keys"])
    else:
        cfg = dict(job.config or {}, vocab_size=vocab_size)
        for key, tok_id in (
            ("pad_token_id", tokenizer.pad_token_id),
            ("bos_token_id", tokenizer.bos_token_id),
            ("eos_token_id", tokenizer.eos_token_id),
        ):
            if tok_id is not None:
                cfg[key] = tok_id
        model = auto.from_config(AutoConfig.for_model(**cfg))
    if model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model, missing


def auto_class(job: PretrainJob):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if job.objective == "mlm" else AutoModelForCausalLM


def train_flops(model, block_size: int, vocab_size: int) -> float:
    """Training FLOPs per token, for the MFU estimate."""
    from lmchain.train import flops

    mcfg = model.config
    n_layers = getattr(mcfg, "num_hidden_layers", None) or getattr(mcfg, "n_layer")
    hidden = getattr(mcfg, "hidden_size", None) or getattr(mcfg, "n_embd")
    return flops.train_flops_per_token(flops.non_embedding_params(model), n_layers, hidden, block_size, vocab_size)


def consolidated(job: PretrainJob, model_config, ckpt_root: Path, tag: str, vocab_size: int):
    """The whole model from a ZeRO-3 checkpoint's shards (rank 0, after the last step)."""
    from lmchain.train import checkpoint

    auto = auto_class(job)
    state_dict = checkpoint.fp32_state_dict(ckpt_root, tag)
    # The run's config (a head tied at the start stays tied in the export).
    export = auto.from_config(model_config) if not job.model else auto.from_pretrained(job.model, config=model_config)
    if export.get_input_embeddings().num_embeddings < vocab_size:
        export.resize_token_embeddings(vocab_size)
    missing, unexpected = export.load_state_dict(state_dict, strict=False)
    export.tie_weights()
    # A checkpoint stores a tied weight once; anything else missing means a broken export.
    loaded = {p.data_ptr() for k, p in export.state_dict().items() if k in state_dict}
    untied = [k for k in missing if export.state_dict()[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise RuntimeError(f"ZeRO-3 export: keys missing {untied} / unexpected {unexpected}")
    return export


if __name__ == "__main__":
    run_rank(main, PretrainJob)
