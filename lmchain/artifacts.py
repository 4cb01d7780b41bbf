"""Run folders, atomic stage outputs and manifests.

A run lives in ``<home>/runs/<run_id>/``, one folder per stage with its manifest.json beside
it; :mod:`lmchain.home` knows where the home is and every other path under it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from lmchain import __version__
from lmchain.home import Home, safe_run_id  # noqa: F401  (safe_run_id: imported from here too)

MANIFEST = "manifest.json"
# A manifest's status: OK, or BLOCKED when a gate stopped the batch (nothing downstream may use it).
OK = "ok"
BLOCKED = "blocked"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_CODE_VERSION: str | None = None


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        rev = ""
        try:
            rev = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = f"{__version__}+{rev}" if rev else __version__
    return _CODE_VERSION


@dataclass
class RunContext:
    """One pipeline run: its id, its home and its folder. ``home`` may be given as a path (a home
    at that folder with the embedded defaults); omitted, it is the environment's."""

    run_id: str
    home: Home = field(default_factory=Home.from_env)
    experiment: str = "lmchain"  # MLflow experiment of the pipeline run
    model_name: str = "lmchain-classifier"  # MLflow registered model the run competes for
    config_hash: str = ""  # sha256 of the run's resolved config, for lineage

    def __post_init__(self) -> None:
        self.home = Home.of(self.home)

    @property
    def run_dir(self) -> Path:
        return self.home.run_dir(self.run_id)

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


@dataclass
class Manifest:
    """What a stage did: small enough for XCom; data stays behind the URIs in ``outputs``."""

    stage: str
    run_id: str
    status: str = OK  # BLOCKED: a gate stopped this batch; no stage may take it as input
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

    @property
    def blocked(self) -> bool:
        return self.status == BLOCKED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        return cls(**data)

    @classmethod
    def read(cls, stage_dir: Path) -> "Manifest":
        return cls.from_dict(json.loads((Path(stage_dir) / MANIFEST).read_text()))


class StageOutput:
    """Writes a stage's files into a temp folder of its own and publishes them as ``<stage>/``.

    The temp folder, ``<stage>.tmp-<host>-<pid>-<random>``, belongs to this attempt alone, so two
    runs (or two attempts of one run) on one home never write into each other's files.
    The final folder appears only once everything in it, manifest included, is written, so a
    task killed half-way leaves a temp folder (removed by a later attempt once its process is
    gone) and never a half output that looks complete. A rerun replaces the previous output
    whole: the stage is idempotent per run.

    Two attempts of one run at once (a retry while a lost attempt still runs, two triggers):
    the first to finish wins. The other finds, under a file lock, an output published after it
    started, drops its own and takes the winner's manifest, so both return the same output and
    the folder is never a mix. An output published before this attempt started is replaced.
    """

    def __init__(self, ctx: RunContext, stage: str, config: dict[str, Any] | None = None):
        self.ctx = ctx
        self.manifest = Manifest(stage=stage, run_id=ctx.run_id, config=config or {})
        self._t0 = 0.0
        self._started_ns = 0
        self.final = ctx.stage_dir(stage)
        self.tmp = attempt_path(self.final, "tmp")
        self._adopt_concurrent = True

    def publish_to(self, final: str | Path) -> None:
        """Publish into ``final`` instead of the run folder (the CLI's ``--out DIR``, which the
        last run to finish replaces)."""
        self.final = Path(final)
        self.tmp = attempt_path(self.final, "tmp")
        self._adopt_concurrent = False

    def path(self, name: str) -> Path:
        """Where to write output ``name`` now (inside the temp folder)."""
        return self.tmp / name

    def output(self, key: str, name: str) -> Path:
        """Declare output ``key`` (its final URI goes into the manifest) and return its temp path."""
        self.manifest.outputs[key] = str(self.final / name)
        return self.tmp / name

    def __enter__(self) -> "StageOutput":
        remove_stale_attempts(self.final)
        self.tmp.mkdir(parents=True)
        _ACTIVE.add(self.tmp)
        self.manifest.started_at = now_iso()
        self._t0 = time.perf_counter()
        self._started_ns = time.time_ns()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _ACTIVE.discard(self.tmp)
        if exc_type is not None:
            return  # leave the temp folder for inspection; a later attempt clears it
        self.manifest.finished_at = now_iso()
        self.manifest.duration_s = round(time.perf_counter() - self._t0, 3)
        for key, uri in self.manifest.outputs.items():
            # Outputs may point outside this folder (the search's choice points at a trial's model).
            local = self.tmp / Path(uri).relative_to(self.final) if Path(uri).is_relative_to(self.final) else None
            if local is not None and local.is_file():
                self.manifest.hashes[key] = sha256_file(local)
        write_json(self.tmp / MANIFEST, self.manifest.to_dict())
        since = self._started_ns if self._adopt_concurrent else None
        if not publish_dir(self.tmp, self.final, unless_published_since=since):
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.manifest = Manifest.read(self.final)


# Temp folders of StageOutputs still being written by this process: not stale although the pid lives.
_ACTIVE: set[Path] = set()
_ATTEMPT = re.compile(r"^(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>.+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$")


def attempt_path(path: Path, kind: str = "tmp") -> Path:
    """A sibling of ``path`` that no other process or attempt uses: ``<name>.<kind>-<host>-<pid>-<random>``.

    The host and pid let a later attempt tell a dead attempt's leftovers from a live one's.
    """
    return path.with_name(f"{path.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"


def remove_stale_attempts(path: Path) -> list[Path]:
    """Remove the temp siblings of ``path`` left by attempts that are gone; returns them.

    Gone: a process of this host that no longer runs, or this process's own finished or failed
    attempts. Folders of other hosts (a shared home) are left: their pids mean nothing here.
    The fixed ``<name>.tmp`` of earlier lmchain versions is removed too.
    """
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for sibling in path.parent.glob(glob.escape(path.name) + ".*"):
        m = _ATTEMPT.match(sibling.name)
        legacy = sibling.name in (path.name + ".tmp", path.name + ".old")
        if not legacy and (m is None or m["name"] != path.name or m["host"] != _host()):
            continue
        if legacy or (m is not None and _attempt_is_gone(int(m["pid"]), sibling)):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def _attempt_is_gone(pid: int, folder: Path) -> bool:
    if pid == os.getpid():
        return folder not in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def _locked(path: Path):
    """An exclusive lock on ``.<name>.lock`` beside ``path`` (released when the block ends or the
    process dies); publishers wait as long as another takes to swap its folder in."""
    from lmchain.locking import file_lock

    return file_lock(path.with_name(f".{path.name}"), timeout=math.inf)


def publish_dir(tmp: Path, final: Path, unless_published_since: int | None = None) -> bool:
    """Replace ``final`` by ``tmp`` with renames, so readers see the old or the new, never a mix.

    Concurrent publishers of one ``final`` take turns (a file lock). With
    ``unless_published_since`` (a ``time.time_ns()``), a ``final`` whose manifest was written
    after that moment is kept and False returned: a concurrent attempt finished first.
    """
    with _locked(final):
        if unless_published_since is not None and _published_ns(final) > unless_published_since:
            return False
        old = attempt_path(final, "old")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    return True


def _published_ns(final: Path) -> int:
    try:
        return (final / MANIFEST).stat().st_mtime_ns
    except OSError:
        return -1


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON value in ``path``, or ``default`` when there is no such file (a dict default is
    copied, so a caller may fill it in)."""
    path = Path(path)
    if not path.is_file():
        return dict(default) if isinstance(default, dict) else default
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temp file of this attempt + rename)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file of its own, so readers and other writers
    never see a half file (the last rename wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = attempt_path(path, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write records as JSON lines; returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_jsonl_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """``write_jsonl`` through a temp file of its own + rename: the file is old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = attempt_path(path, "tmp")
    try:
        n = write_jsonl(tmp, records)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped).

    A line that is not a JSON object is an ``InputError`` naming the file and the line, with the
    parser's reason; nothing is skipped silently.
    """
    from lmchain.errors import InputError

    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}, line {number}: not UTF-8 ({exc.reason} at byte {exc.start} of the "
                    "line); re-encode the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\r\n"))  # else a cut string reads as "invalid control character"
            except json.JSONDecodeError as exc:
                cut = " (the line is cut short: a writer may have been killed)" if not line.endswith("\n") else ""
                what = exc.msg.removesuffix(" at")  # json's messages: "Unterminated string starting at"
                raise InputError(
                    f"{path}, line {number}: not valid JSON ({what} at column {exc.colno}){cut}; "
                    "fix or remove that line"
                ) from None
            if not isinstance(obj, dict):
                raise InputError(
                    f"{path}, line {number}: a JSON {type(obj).__name__}, not an object; each line "
                    'must be one record like {"text": ...}'
                ) from None
            yield obj


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
