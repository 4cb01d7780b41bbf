"""Where things live: LMCHAIN_HOME, run folders, atomic stage outputs and manifests.

Layout under ``LMCHAIN_HOME`` (default ``./.lmchain``, relative to the working directory, so
that ``lmchain serve`` run from the repository root after ``lmchain demo`` finds the demo)::

    airflow/                Airflow home (SQLite metadata DB, logs)
    mlflow/mlflow.db        MLflow tracking + registry (SQLite)
    mlflow/artifacts/       MLflow artifacts
    gx/                     Great Expectations project (suites, checkpoints, Data Docs)
    runs/<run_id>/<stage>/  one folder per stage, with manifest.json
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from lmchain import __version__

MANIFEST = "manifest.json"


def home() -> Path:
    """The LMCHAIN_HOME folder (created on first use)."""
    path = Path(os.environ.get("LMCHAIN_HOME") or Path.cwd() / ".lmchain").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_run_id(run_id: str) -> str:
    """Airflow run ids carry ':' and '+'; keep folder names portable."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_CODE_VERSION: str | None = None


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        rev = ""
        try:
            rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                 capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = f"{__version__}+{rev}" if rev else __version__
    return _CODE_VERSION


@dataclass
class RunContext:
    """One pipeline run: its id and its folder."""

    run_id: str
    home: Path = field(default_factory=home)
    experiment: str = "lmchain"  # MLflow experiment of the pipeline run
    model_name: str = "lmchain-classifier"  # MLflow registered model the run competes for
    config_hash: str = ""  # sha256 of the run's resolved config, for lineage

    @property
    def run_dir(self) -> Path:
        return self.home / "runs" / safe_run_id(self.run_id)

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


@dataclass
class Manifest:
    """What a stage did: small enough for XCom; data stays behind the URIs in ``outputs``."""

    stage: str
    run_id: str
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    drop_reasons: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # sha256 of each output file, for lineage
    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    code_version: str = field(default_factory=code_version)
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        return cls(**data)

    @classmethod
    def read(cls, stage_dir: Path) -> "Manifest":
        return cls.from_dict(json.loads((Path(stage_dir) / MANIFEST).read_text()))


class StageOutput:
    """Writes a stage's files into ``<stage>.tmp/`` and publishes them as ``<stage>/`` at the end.

    The final folder appears only once everything in it, manifest included, is written, so a
    task killed half-way leaves a ``.tmp`` folder (removed by the next attempt) and never a
    half output that looks complete. A rerun replaces the previous output whole: the stage is
    idempotent per run.
    """

    def __init__(self, ctx: RunContext, stage: str, config: dict[str, Any] | None = None):
        self.ctx = ctx
        self.final = ctx.stage_dir(stage)
        self.tmp = self.final.with_name(stage + ".tmp")
        self.manifest = Manifest(stage=stage, run_id=ctx.run_id, config=config or {})
        self._t0 = 0.0

    def path(self, name: str) -> Path:
        """Where to write output ``name`` now (inside the temp folder)."""
        return self.tmp / name

    def output(self, key: str, name: str) -> Path:
        """Declare output ``key`` (its final URI goes into the manifest) and return its temp path."""
        self.manifest.outputs[key] = str(self.final / name)
        return self.tmp / name

    def __enter__(self) -> "StageOutput":
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.manifest.started_at = now_iso()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return  # leave .tmp for inspection; the next attempt clears it
        self.manifest.finished_at = now_iso()
        self.manifest.duration_s = round(time.perf_counter() - self._t0, 3)
        for key, uri in self.manifest.outputs.items():
            # Outputs may point outside this folder (the search's choice points at a trial's model).
            local = self.tmp / Path(uri).relative_to(self.final) if Path(uri).is_relative_to(self.final) else None
            if local is not None and local.is_file():
                self.manifest.hashes[key] = sha256_file(local)
        write_json(self.tmp / MANIFEST, self.manifest.to_dict())
        publish_dir(self.tmp, self.final)


def publish_dir(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` with renames, so readers see the old or the new, never a mix."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSON lines; returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def timed(manifest: Manifest, name: str) -> Iterator[None]:
    """Record the wall time of a block as ``info.timings[name]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        manifest.info.setdefault("timings", {})[name] = round(time.perf_counter() - t0, 3)
