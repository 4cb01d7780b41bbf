"""The start of every training rank program (:mod:`lmchain.train.worker` and
:mod:`lmchain.train.pretrain_worker`): join the process group and set up the device, threads,
precision and seeds the same way for both. The job itself is read by
:func:`lmchain.train.job.run_rank`."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

from lmchain.train.job import Job


@dataclass
class Rank:
    job: Job
    rank: int
    world: int
    local_rank: int
    on_gpu: bool
    device: Any  # torch.device
    cpu_bf16: bool  # CPU rank autocasting matmuls to bfloat16 (GPUs get bf16 from DeepSpeed's config)
    autocast: Callable[[], Any]  # a fresh context manager per call
    dist: Any  # torch.distributed

    def logger(self, tag: str) -> Callable[[str], None]:
        """Print from rank 0 only, prefixed ``[lmchain.train <tag>]`` (the line a reader of the task log
        looks for; failures go to the error files of :mod:`lmchain.train.job`, not to the log)."""

        def log(msg: str) -> None:
            if self.rank == 0:
                print(f"[lmchain.train {tag}] {msg}", flush=True)

        return log


def init_rank(job: Job) -> Rank:
    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    on_gpu = get_accelerator().device_name() == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if on_gpu:
        torch.cuda.set_device(local_rank)  # before NCCL starts, so each rank talks from its own GPU
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    dist = torch.distributed
    rank, world = dist.get_rank(), dist.get_world_size()
    local_world = int(os.environ.get("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", world)))
    if not on_gpu:
        # Ranks share the machine's cores; oversubscribing them slows every rank down.
        torch.set_num_threads(job.threads or max(1, (os.cpu_count() or 1) // local_world))
    cpu_bf16 = not on_gpu and job.precision == "bf16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if cpu_bf16 else nullcontext
    random.seed(job.seed)
    torch.manual_seed(job.seed)
    device = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    return Rank(job, rank, world, local_rank, on_gpu, device, cpu_bf16, autocast, dist)
