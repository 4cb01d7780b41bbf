"""The protocol between the launcher and its rank programs: a typed job spec in, and out either
``metrics.json`` (rank 0, on success) or one ``errors/rank<N>.json`` per rank that gave up.

The launcher (:mod:`lmchain.train.launcher`) builds a :class:`FinetuneJob` or :class:`PretrainJob`
from the stage's config and the task fields the stage adds, and writes it as ``spec.json``. A
missing or unknown field fails there, in the Airflow task, with the field's name -- not in a
rank, minutes later, as a ``KeyError``. The rank programs read the same class back.

A rank that cannot go on raises :class:`JobError` with the cause (too little data, a checkpoint
past ``max_steps``): :func:`run_rank` writes it to the rank's error file as not retryable, since
running the same job again would fail the same way. Any other exception is written as retryable
(a crash, an out-of-memory kill of a helper), and so is a rank that wrote nothing at all (killed).
The launcher decides on retries from these files alone, never from the text of the log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Self, TypeVar

ERRORS_DIR = "errors"


class JobError(Exception):
    """A rank's reason to stop that a retry would not change (bad data or settings)."""


@dataclass(frozen=True, kw_only=True)
class Job:
    """What every rank program needs. Paths are strings: the spec is JSON."""

    worker: ClassVar[str]  # the rank program's module

    seed: int
    batch_size: int
    max_steps: int
    epochs: float
    weight_decay: float
    threads: int
    precision: str
    model: str | None  # weights to start from (None: a new model from ``config``)
    tokenizer: str
    config: dict[str, Any] | None  # a model config for a model from scratch
    output_dir: str
    ds_config: dict[str, Any]
    metrics_file: str
    error_dir: str

    @classmethod
    def build(cls, settings: dict[str, Any], task: dict[str, Any], **protocol: Any) -> Self:
        """The job from a stage's training settings (its config section, as a dict), the task
        fields the stage adds (files, model, labels; these win) and the launcher's own fields.
        Settings the rank programs do not read (ranks, timeout_s, hostfile) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(task) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown task field(s) {unknown}; the rank program reads {sorted(names)}")
        values = {k: v for k, v in settings.items() if k in names} | task | protocol
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(values))
        if missing:
            raise TypeError(f"{cls.__name__}: missing field(s) {missing}")
        return cls(**values)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"worker": self.worker, **dataclasses.asdict(self)}, indent=2))

    @classmethod
    def read(cls, path: str | Path) -> Self:
        data = json.loads(Path(path).read_text())
        worker = data.pop("worker", None)
        if worker != cls.worker:
            raise TypeError(f"{path} is a job for {worker!r}, not for {cls.worker}")
        return cls(**data)

    def error_file(self, rank: int) -> Path:
        return Path(self.error_dir) / f"rank{rank}.json"


@dataclass(frozen=True, kw_only=True)
class FinetuneJob(Job):
    """A job of :mod:`lmchain.train.worker`: sequence (``cls``) or token (``ner``) classification."""

    worker: ClassVar[str] = "lmchain.train.worker"

    task: str  # 'cls' or 'ner'
    train_file: str
    validation_file: str | None
    report_file: str | None = None
    label_names: list[str]
    max_length: int
    learning_rate: float
    warmup_ratio: float
    lr_schedule: str
    group_by_length: bool
    group_batches: int = 64  # batches of similar length drawn from a pool this many batches wide
    word_dropout: float
    dropout: float | None
    method: str  # 'full' or 'lora'
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: list[str] = field(default_factory=list)
    class_weights: str
    eval_batch_size: int
    eval_every: int
    patience: int
    layer_lr_decay: float = 1.0
    ema_decay: float = 0.0


@dataclass(frozen=True, kw_only=True)
class PretrainJob(Job):
    """A job of :mod:`lmchain.train.pretrain_worker`: MLM or CLM on packed blocks."""

    worker: ClassVar[str] = "lmchain.train.pretrain_worker"

    objective: str  # 'mlm' or 'clm'
    size: str | None  # the named size of a model from scratch (None: continued from ``model``)
    data_dir: str
    checkpoint_dir: str
    seen_dir: str
    checkpoint_every: int
    keep_checkpoints: int
    mlm_probability: float
    mask_token_prob: float
    random_token_prob: float
    peak_tflops: float
    log_every: int = 0  # 0: about 20 loss lines per job
    # A checkpoint without an LM head: fit the new head this many steps, encoder frozen (0: off).
    head_warmup_steps: int = 0
    head_warmup_learning_rate: float = 1e-2
    initial_dir: str | None = None  # rank 0 saves the step-0 model here (the stage's "before" baseline)


JOBS: dict[str, type[Job]] = {FinetuneJob.worker: FinetuneJob, PretrainJob.worker: PretrainJob}


def report_error(path: Path, cause: str, retryable: bool, rank: int) -> None:
    """Write a rank's error file (atomically: the launcher may read it while the rank dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"cause": cause, "retryable": retryable, "rank": rank}))
    os.replace(tmp, path)


def read_errors(error_dir: Path) -> list[dict[str, Any]]:
    """The error files of a job's ranks, lowest rank first; [] when no rank wrote one."""
    errors = []
    for path in sorted(error_dir.glob("rank*.json"), key=lambda p: int(p.stem[4:] or 0)):
        try:
            errors.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # a rank killed while writing: nothing it said can be trusted
            continue
    return errors


AnyJob = TypeVar("AnyJob", bound=Job)  # a rank program's main takes the job class it reads


def run_rank(main: Callable[[int, AnyJob], None], job_type: type[AnyJob], argv: list[str] | None = None) -> None:
    """Entry point of a rank program: read the job, run ``main(rank, job)``, and on failure write
    the rank's error file before exiting non-zero. A :class:`JobError` is printed as one line (it
    is the whole story); anything else keeps its traceback in the log."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--local_rank", type=int, default=0)  # passed by the deepspeed launcher
    job = job_type.read(parser.parse_args(argv).spec)
    rank = int(os.environ.get("RANK", 0))
    try:
        main(rank, job)
    except JobError as exc:
        report_error(job.error_file(rank), str(exc), retryable=False, rank=rank)
        print(f"rank {rank}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        cause = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        report_error(job.error_file(rank), cause, retryable=True, rank=rank)
        raise
