"""Multi-node training without ssh: the hostfile and the rendezvous, and one launcher per node.

DeepSpeed's default multi-node launch starts the ranks of every machine over pdsh/ssh from one
of them. Clusters without ssh between workers (Kubernetes pods, Celery workers on separate hosts,
Slurm with its own launcher) start one launcher per node instead, each with its node rank, all
meeting at the same rendezvous (``master_addr:master_port``, the node-0 machine). The job
description is the same hostfile DeepSpeed uses (``host slots=N`` lines; ``TrainCommon.hostfile``):
this module turns it into each node's command, for the ``deepspeed`` launcher (``--no_ssh
--node_rank``) or for ``torchrun`` (c10d rendezvous). lmchain's training workers read only the
standard ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR`` variables, which both set.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lmchain.errors import InputError

LAUNCHERS = ("deepspeed", "torchrun")
_LINE = re.compile(r"^(?P<host>[A-Za-z0-9._-]+)\s+slots=(?P<slots>\d+)$")


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of one job meet: the first host of the hostfile unless given."""

    hosts: dict[str, int]  # host -> processes (slots) on it, in hostfile order
    master_addr: str
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        return sum(self.hosts.values())

    def node_rank(self, host: str) -> int:
        if host not in self.hosts:
            raise InputError(f"host {host!r} is not in the hostfile ({', '.join(self.hosts)})")
        return list(self.hosts).index(host)


def parse_hostfile(text: str, source: str = "hostfile") -> dict[str, int]:
    """``host slots=N`` lines (``#`` comments and blank lines ignored) -> {host: N}, in order."""
    hosts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match:
            raise InputError(f"{source} line {number}: {raw.strip()!r} is not `host slots=N`")
        host, slots = match["host"], int(match["slots"])
        if slots < 1:
            raise InputError(f"{source} line {number}: slots must be >= 1")
        if host in hosts:
            raise InputError(f"{source} line {number}: host {host!r} is listed twice")
        hosts[host] = slots
    if not hosts:
        raise InputError(f"{source} lists no hosts; write one `host slots=N` line per machine")
    return hosts


def hostfile_text(hosts: dict[str, int]) -> str:
    return "".join(f"{host} slots={slots}\n" for host, slots in hosts.items())


def rendezvous(hostfile: str | Path, master_addr: str = "", master_port: int = 29500) -> Rendezvous:
    path = Path(hostfile).expanduser()
    if not path.is_file():
        raise InputError(f"hostfile {path} does not exist; write one `host slots=N` line per machine")
    hosts = parse_hostfile(path.read_text(), str(path))
    return Rendezvous(hosts, master_addr or next(iter(hosts)), master_port)


def node_command(
    rdzv: Rendezvous,
    node_rank: int,
    hostfile: str | Path,
    module: str,
    args: list[str],
    launcher: str = "deepspeed",
    job_id: str = "lmchain",
) -> list[str]:
    """The command that node ``node_rank`` runs to start its share of the ranks (no ssh)."""
    if launcher not in LAUNCHERS:
        raise InputError(f"launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    if not 0 <= node_rank < len(rdzv.hosts):
        raise InputError(f"node_rank {node_rank}: the hostfile has {len(rdzv.hosts)} nodes (0-{len(rdzv.hosts) - 1})")
    slots = list(rdzv.hosts.values())[node_rank]
    if launcher == "deepspeed":
        return [
            sys.executable,
            "-m",
            "deepspeed.launcher.runner",
            "--hostfile",
            str(hostfile),
            "--no_ssh",
            "--node_rank",
            str(node_rank),
            "--master_addr",
            rdzv.master_addr,
            "--master_port",
            str(rdzv.master_port),
            "--module",
            module,
            *args,
        ]
    if len(set(rdzv.hosts.values())) != 1:
        raise InputError(
            "torchrun starts the same number of processes on every node; give every host "
            "the same slots or use launcher=deepspeed"
        )
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(len(rdzv.hosts)),
        "--node_rank",
        str(node_rank),
        "--nproc_per_node",
        str(slots),
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"{rdzv.master_addr}:{rdzv.master_port}",
        "--rdzv_id",
        job_id,
        "--module",
        module,
        *args,
    ]
