"""Launch a training job with the ``deepspeed`` launcher, as its own process tree.

The Airflow task (or the CLI) calls :func:`launch`; it writes the job spec and the DeepSpeed
config, runs ``deepspeed --num_gpus N --module <worker>`` (``--hostfile`` for several machines),
streams the ranks' output into the task log and ``train.log``, and returns the metrics that rank
0 wrote. The spec is a typed job of :mod:`lmchain.train.job`; a rank that fails says why in its
error file there, which is what decides whether a retry may help. Without a GPU the same
launcher runs CPU ranks (``DS_ACCELERATOR=cpu``, gloo), which is how tests exercise the real
DeepSpeed path. Workers: ``lmchain.train.worker`` (fine-tuning) and
``lmchain.train.pretrain_worker`` (MLM/CLM pretraining).
"""

from __future__ import annotations

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
from lmchain.train.job import ERRORS_DIR, JOBS, Job, read_errors


class TrainingFailed(LmchainError):
    """The training processes exited with an error.

    ``retryable`` is true unless a rank reported a cause that a retry would not change (a
    :class:`~lmchain.train.job.JobError`: too little data, a bad setting) or the job ran out of
    time: a killed or crashed process or a lost machine may succeed on a retry, and a checkpointed
    job resumes.
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


def build_job(
    spec: dict[str, Any], cfg: TrainCommon, workdir: Path, module: str, ds: dict[str, Any] | None, on_gpu: bool
) -> Job:
    """The typed job of ``module`` from the stage's training settings and task fields ``spec``."""
    settings = cfg.model_dump()
    return JOBS[module].build(
        settings,
        spec,
        ds_config=ds if ds is not None else ds_config(cfg, on_gpu),
        metrics_file=str(workdir / "metrics.json"),
        error_dir=str(workdir / ERRORS_DIR),
    )


def rank_env(cfg: TrainCommon, on_gpu: bool) -> dict[str, str]:
    """The job's environment: ours, CPU ranks where there is no GPU, torch's thread settings left
    to the rank (the launcher would pass the parent's down), and for a single direct rank the
    variables the launcher would have set."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    if not on_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    if single_process(cfg):
        env.update(
            {
                "RANK": "0",
                "LOCAL_RANK": "0",
                "WORLD_SIZE": "1",
                "LOCAL_SIZE": "1",
                "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(free_port()),
            }
        )
    return env


def run_logged(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float, tail: deque[str]) -> int:
    """Run the job's process tree, its output into ``log_path``, the task log and ``tail``; kill
    the whole tree on a timeout (:class:`TrainingFailed`) or any other way out. -> exit code."""
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()  # readable while the job runs (`tail -f train.log`)
                tail.append(line.rstrip())
                print(line.rstrip(), flush=True)  # every rank's output, into the task log

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TrainingFailed(
                f"training exceeded timeout_s={timeout_s}s; raise it or lower the steps (log: {log_path})"
            ) from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)  # the whole launcher tree, ranks included
                proc.wait()
            reader.join(timeout=10)
    return proc.returncode


def failure(returncode: int, errors: list[dict[str, Any]], tail: list[str], log_path: Path) -> TrainingFailed:
    """Why the job failed, and whether a retry may help: the first rank's reported cause; else a
    signal (the deepspeed launcher prints a rank's as "return code = -N"; a direct rank's is our
    exit code); else the last error-looking line of the log."""
    stop = next((e for e in errors if not e.get("retryable", True)), None)  # a retry would fail the same way
    killed = next((int(m.group(1)) for line in tail for m in [re.search(r"return code = -(\d+)", line)] if m), None)
    if killed is None and returncode < 0:
        killed = -returncode
    if stop is not None:
        cause = f"rank {stop.get('rank', '?')}: {stop['cause']}"
    elif killed:
        cause = f"a rank was killed by signal {killed} ({signal.Signals(killed).name})"
    elif errors:
        cause = f"rank {errors[0].get('rank', '?')}: {errors[0]['cause']}"
    else:
        cause = next((line for line in reversed(tail) if "Error" in line), tail[-1] if tail else "")
    last = "\n".join(tail[-20:])
    retryable = stop is None
    return TrainingFailed(
        f"training job failed (exit {returncode}): {cause.strip()} -- full log: {log_path}\n"
        f"last lines of the log:\n{last}",
        retryable=retryable,
    )


def launch(
    spec: dict[str, Any],
    cfg: TrainCommon,
    workdir: Path,
    module: str = "lmchain.train.worker",
    ds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one training job; ``spec`` holds the task-specific fields of the worker's job, ``ds``
    the DeepSpeed config (default: :func:`ds_config`). -> rank 0's metrics."""
    workdir.mkdir(parents=True, exist_ok=True)
    on_gpu = gpu_available()
    job = build_job(spec, cfg, workdir, module, ds, on_gpu)
    # A stale metrics or error file of an earlier attempt must not pass for this one's.
    Path(job.metrics_file).unlink(missing_ok=True)
    for old in Path(job.error_dir).glob("rank*.json"):
        old.unlink()
    spec_path = workdir / "spec.json"
    job.write(spec_path)

    cmd = launcher_cmd(cfg, module, spec_path)
    log_path = workdir / "train.log"
    tail: deque[str] = deque(maxlen=40)
    t0 = time.perf_counter()
    print("launching:", " ".join(cmd), flush=True)
    returncode = run_logged(cmd, rank_env(cfg, on_gpu), log_path, cfg.timeout_s, tail)
    if returncode != 0 or not Path(job.metrics_file).is_file():
        raise failure(returncode, read_errors(Path(job.error_dir)), list(tail), log_path)
    metrics = json.loads(Path(job.metrics_file).read_text())
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return metrics
