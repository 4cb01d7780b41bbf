"""Launch a training job with the ``deepspeed`` launcher, as its own process tree.

The Airflow task (or the CLI) calls :func:`launch`; it writes the job spec and the DeepSpeed
config, runs ``deepspeed --num_gpus N --module <worker>`` (``--hostfile`` for several machines),
streams the ranks' output into the task log and ``train.log``, and returns the metrics that rank
0 wrote. Without a GPU the same launcher runs CPU ranks (``DS_ACCELERATOR=cpu``, gloo), which is
how tests exercise the real DeepSpeed path. Workers: ``lmchain.train.worker`` (fine-tuning) and
``lmchain.train.pretrain_worker`` (MLM/CLM pretraining).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from lmchain.config import TrainCommon
from lmchain.errors import LmchainError
from lmchain.netutil import free_port


class TrainingFailed(LmchainError):
    """The training processes exited with an error.

    ``retryable`` is true when no rank reported a cause of its own (a killed or crashed process,
    a lost machine): a retry may succeed, and a checkpointed job resumes. A cause reported by the
    worker (``[lmchain.train error]``: too little data, a bad setting) or a timeout would only
    fail again.
    """

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


def gpu_available() -> bool:
    if os.environ.get("DS_ACCELERATOR") == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def ds_config(cfg: TrainCommon, on_gpu: bool) -> dict[str, Any]:
    """DeepSpeed config: ZeRO stage, precision, clipping. bf16 on GPUs; CPU ranks run fp32."""
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,  # the worker passes a torch AdamW
        "bf16": {"enabled": on_gpu},
        "steps_per_print": 10**9,  # the worker logs progress itself
        "wall_clock_breakdown": False,
    }


def single_process(cfg: TrainCommon) -> bool:
    """One rank on this machine: the rank program is started directly, with the environment the
    launcher would give it. The ``deepspeed`` launcher would add two Python start-ups (its runner,
    then its per-node launch), about 6 s of a one-minute fine-tune; the rank still trains on a
    DeepSpeed engine."""
    return cfg.ranks == 1 and not getattr(cfg, "hostfile", "")


def launcher_cmd(cfg: TrainCommon, module: str, spec_path: Path) -> list[str]:
    """The job's command: the rank program itself for a single local rank (:func:`single_process`),
    else the ``deepspeed`` launcher with ``ranks`` processes on this machine, or on the machines of
    a hostfile (``host slots=N`` lines; the launcher reaches them with pdsh/ssh, so the code, the
    data and the checkpoint folder must sit at the same paths on every machine, e.g. a shared file
    system)."""
    if single_process(cfg):
        return [sys.executable, "-m", module, "--spec", str(spec_path)]
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner"]
    hostfile = getattr(cfg, "hostfile", "")
    if hostfile:
        cmd += ["--hostfile", hostfile, "--master_port", str(free_port())]
        if getattr(cfg, "num_nodes", 0):
            cmd += ["--num_nodes", str(cfg.num_nodes)]
        cmd += ["--num_gpus", str(cfg.ranks)]  # per machine
    else:
        cmd += ["--num_gpus", str(cfg.ranks), "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return cmd + ["--module", module, "--spec", str(spec_path)]


def launch(spec: dict[str, Any], cfg: TrainCommon, workdir: Path, module: str = "lmchain.train.worker",
           ds: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one training job; ``spec`` holds the task-specific fields of the worker's spec, ``ds``
    the DeepSpeed config (default: :func:`ds_config`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    on_gpu = gpu_available()
    spec = {
        **dataclasses.asdict(cfg),  # every training setting, task-specific ones included
        **spec,
        "ds_config": ds if ds is not None else ds_config(cfg, on_gpu),
        "metrics_file": str(workdir / "metrics.json"),
    }
    Path(spec["metrics_file"]).unlink(missing_ok=True)  # a stale one must not pass for this job's
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))

    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    if not on_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    # The launcher reads torch's thread settings from the parent; let the worker pick them.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    cmd = launcher_cmd(cfg, module, spec_path)
    if single_process(cfg):
        env.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})

    log_path = workdir / "train.log"
    tail: deque[str] = deque(maxlen=40)
    t0 = time.perf_counter()
    print("launching:", " ".join(cmd), flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()  # readable while the job runs (`tail -f train.log`)
                tail.append(line.rstrip())
                print(line.rstrip(), flush=True)  # every rank's output, into the task log

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            raise TrainingFailed(f"training exceeded timeout_s={cfg.timeout_s}s; raise it or lower the "
                                 f"steps (log: {log_path})") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)  # the whole launcher tree, ranks included
                proc.wait()
            reader.join(timeout=10)
    if proc.returncode != 0 or not Path(spec["metrics_file"]).is_file():
        # The launcher reports a rank's signal as "return code = -N"; a direct rank's shows in ours.
        killed = next((int(m.group(1)) for l in tail for m in [re.search(r"return code = -(\d+)", l)] if m), None)
        if killed is None and proc.returncode < 0:
            killed = -proc.returncode
        cause = next((l for l in reversed(tail) if "[lmchain.train error]" in l), None) \
            or (f"a rank was killed by signal {killed} ({signal.Signals(killed).name})" if killed else None) \
            or next((l for l in reversed(tail) if "Error" in l), tail[-1] if tail else "")
        reported = any("[lmchain.train error]" in l for l in tail)
        last = "\n".join(list(tail)[-20:])
        raise TrainingFailed(f"training job failed (exit {proc.returncode}): {cause.strip()} "
                             f"-- full log: {log_path}\nlast lines of the log:\n{last}",
                             retryable=not reported)
    metrics = json.loads(Path(spec["metrics_file"]).read_text())
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return metrics
