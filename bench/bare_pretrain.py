"""The baseline of bench/pretrain_overhead.py and bench/gpu_pretrain.py: a bare DeepSpeed MLM
script, what a tutorial writes, on the same packed blocks, model, DeepSpeed config and steps as
lmchain's job. Launched by the same ``deepspeed`` launcher; no checkpoints, no logs of seen
blocks, no resume, masking by transformers' DataCollatorForLanguageModeling.

    deepspeed --num_gpus N bench/bare_pretrain.py --spec <lmchain job's spec.json> --out metrics.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--local_rank", type=int, default=0)
    args = parser.parse_args()
    spec = json.load(open(args.spec))

    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    on_gpu = get_accelerator().device_name() == "cuda"
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        torch.set_num_threads(spec.get("threads") or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(spec["seed"])

    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    blocks = np.load(os.path.join(spec["data_dir"], "blocks.npy"), mmap_mode="r")
    order = np.random.default_rng(spec["seed"]).permutation(len(blocks))[rank::world]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=spec["mlm_probability"])

    if spec["model"]:
        model = AutoModelForMaskedLM.from_pretrained(spec["model"])
    else:
        model = AutoModelForMaskedLM.from_config(AutoConfig.for_model(**dict(spec["config"],
                                                                             vocab_size=len(tokenizer))))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=spec["ds_config"])
    bs, accum, steps = spec["batch_size"], spec["ds_config"]["gradient_accumulation_steps"], spec["max_steps"]
    engine.train()
    t0 = time.perf_counter()
    i = 0
    for _ in range(steps):
        for _ in range(accum):
            idx = order[(i * bs) % (len(order) - bs):][:bs]
            i += 1
            batch = collate([{"input_ids": blocks[j].astype(np.int64)} for j in idx])
            loss = engine(input_ids=batch["input_ids"].to(engine.device), labels=batch["labels"].to(engine.device)).loss
            engine.backward(loss)
            engine.step()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if rank == 0:
        tokens = steps * accum * bs * world * blocks.shape[1]
        json.dump({"tokens_per_second": tokens / seconds, "train_seconds": seconds, "final_loss": loss.item()},
                  open(args.out, "w"))
        print(f"bare: {tokens / seconds:.0f} tokens/s, loss {loss.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
