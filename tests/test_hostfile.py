"""Multi-node launch without ssh: the hostfile, each node's command, and a real two-node
rendezvous on this machine (two launchers, node ranks 0 and 1, meeting on 127.0.0.1)."""

import json
import os
import subprocess

import pytest

from lmchain.errors import InputError
from lmchain.netutil import free_port
from lmchain.train.hostfile import hostfile_text, node_command, parse_hostfile, rendezvous


def test_hostfile_round_trip_and_rendezvous(tmp_path):
    hosts = {"gpu-0": 8, "gpu-1": 8}
    path = tmp_path / "hostfile"
    path.write_text("# two machines\n" + hostfile_text(hosts) + "\n")
    rdzv = rendezvous(path, master_port=29600)
    assert rdzv.hosts == hosts and rdzv.world_size == 16
    assert rdzv.master_addr == "gpu-0" and rdzv.node_rank("gpu-1") == 1


@pytest.mark.parametrize("text,message", [
    ("gpu-0 slots=8\ngpu-0 slots=8\n", "line 2: host 'gpu-0' is listed twice"),
    ("gpu-0 8\n", "line 1: 'gpu-0 8' is not `host slots=N`"),
    ("gpu-0 slots=0\n", "line 1: slots must be >= 1"),
    ("# nothing\n", "lists no hosts"),
])
def test_bad_hostfiles_name_the_line(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("`", ".")):
        parse_hostfile(text)


def test_node_commands(tmp_path):
    path = tmp_path / "hostfile"
    path.write_text("a slots=2\nb slots=2\n")
    rdzv = rendezvous(path, master_addr="10.0.0.5", master_port=29500)
    ds = node_command(rdzv, 1, path, "lmchain.train.worker", ["--spec", "s.json"])
    assert ds[ds.index("--node_rank") + 1] == "1" and "--no_ssh" in ds
    assert ds[ds.index("--master_addr") + 1] == "10.0.0.5" and ds[-3:] == ["lmchain.train.worker", "--spec", "s.json"]
    tr = node_command(rdzv, 0, path, "lmchain.train.worker", [], launcher="torchrun")
    assert tr[tr.index("--rdzv_endpoint") + 1] == "10.0.0.5:29500" and tr[tr.index("--nproc_per_node") + 1] == "2"
    with pytest.raises(InputError, match="node_rank 2"):
        node_command(rdzv, 2, path, "m", [])
    with pytest.raises(InputError, match="launcher 'mpi'"):
        node_command(rdzv, 0, path, "m", [], launcher="mpi")


@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun"])
def test_two_nodes_meet_without_ssh(tmp_path, launcher):
    """Each 'node' is its own launcher process, as on two machines; only the rendezvous joins them."""
    path = tmp_path / "hostfile"
    path.write_text(hostfile_text({"node-a": 1, "node-b": 1}))
    rdzv = rendezvous(path, master_addr="127.0.0.1", master_port=free_port())
    out = tmp_path / "rendezvous.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(node_command(rdzv, rank, path, "lmchain.train.rendezvous_check", ["--out", str(out)],
                                           launcher=launcher, job_id=f"test-{launcher}"),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
             for rank in (0, 1)]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                os.killpg(p.pid, 9)
            raise
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["rank_sum"] == 1, result
