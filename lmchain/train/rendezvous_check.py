"""Check a multi-node job's rendezvous before spending GPU hours on it.

Start it with the same per-node commands as a training job (``lmchain.train.hostfile``), with
``--module lmchain.train.rendezvous_check --out FILE``: every rank joins the process group and
all-reduces its rank; rank 0 writes the world size, the sum and the hosts it saw to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import socket


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args, _ = parser.parse_known_args()  # the deepspeed launcher adds --local_rank=N

    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"
    dist.init_process_group("nccl" if on_gpu else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    rank = torch.tensor([float(dist.get_rank())], device=device)
    dist.all_reduce(rank)
    hosts: list = [None] * dist.get_world_size()
    node = os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "?"))
    dist.all_gather_object(hosts, f"{socket.gethostname()}/{node}")
    if dist.get_rank() == 0:
        with open(args.out, "w") as fh:
            json.dump({"world_size": dist.get_world_size(), "rank_sum": int(rank.item()), "ranks": hosts}, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
