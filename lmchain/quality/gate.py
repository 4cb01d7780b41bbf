"""Running a suite as a GX checkpoint; quarantine, acceptance and reference distributions.

State under LMCHAIN_HOME:

    gx/                                GX project: suites, checkpoints, results, Data Docs
    quarantine/<run_id>/<suite>/       a blocked batch: its files, validation.json, batch.json
    quarantine/<run_id>/<suite>/accepted.json   written by `lmchain gate --accept`
    quality/reference/<suite>.json     distributions of the last accepted batch (for shift checks)
"""

from __future__ import annotations

import getpass
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmchain.artifacts import now_iso, sha256_file, write_json
from lmchain.config import SuiteConfig
from lmchain.errors import InputError


@dataclass
class SuiteResult:
    suite: str
    rows: int
    checks: list[dict[str, Any]]
    docs_url: str
    batch_sha256: str
    accepted: dict[str, Any] | None = None
    quarantine: str | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"] and c["severity"] == "critical"]

    @property
    def passed(self) -> bool:
        return not self.failed or self.accepted is not None

    def failure_text(self) -> str:
        return "; ".join(f"{c['expectation']}({_short(c['kwargs'])}) observed {c['observed']}" for c in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "rows": self.rows, "passed": self.passed, "checks": self.checks,
                "docs_url": self.docs_url, "batch_sha256": self.batch_sha256, "accepted": self.accepted,
                "quarantine": self.quarantine}


def _short(kwargs: dict) -> dict:
    # References are whole distributions: too long for a one-line message.
    return {k: v for k, v in kwargs.items() if k not in ("reference", "batch_id")}


def quarantine_dir(home: Path, run_id: str, suite: str) -> Path:
    from lmchain.artifacts import safe_run_id

    return home / "quarantine" / safe_run_id(run_id) / suite


def reference_path(home: Path, suite: str) -> Path:
    return home / "quality" / "reference" / f"{suite}.json"


def batch_hash(files: list[Path]) -> str:
    from lmchain.artifacts import sha256_text

    return sha256_text("".join(sha256_file(f) for f in sorted(files)))


def context(home: Path):
    import great_expectations as gx

    import lmchain.quality.expectations  # noqa: F401 - registers the custom expectations

    ctx = gx.get_context(mode="file", project_root_dir=str(home))  # -> <home>/gx/
    bars = ctx.variables.progress_bars
    # A new project holds None; a reloaded one a plain dict read back from great_expectations.yml.
    enabled = bars is None or (bars.get("globally", True) if isinstance(bars, dict) else bars.globally)
    if enabled:
        # Progress bars would flood the Airflow task log (and the CLI's stderr) per expectation.
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        ctx.variables.save()
    return ctx


def _checkpoint(ctx, suite: str, expectations: list):
    import great_expectations as gx

    source = ctx.data_sources.add_or_update_pandas(name="lmchain")
    try:
        asset = source.get_asset(suite)
    except LookupError:
        asset = source.add_dataframe_asset(name=suite)
    try:
        batch_def = asset.get_batch_definition("whole")
    except (LookupError, KeyError):
        batch_def = asset.add_batch_definition_whole_dataframe("whole")
    gx_suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=suite, expectations=expectations))
    vdef = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=f"{suite}_vd", data=batch_def,
                                                                            suite=gx_suite))
    return ctx.checkpoints.add_or_update(gx.Checkpoint(
        name=f"{suite}_gate", validation_definitions=[vdef],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
        result_format={"result_format": "SUMMARY"}))


def _checks(result) -> list[dict[str, Any]]:
    rows = []
    for vres in result.run_results.values():
        for r in vres.results:
            res = r.result or {}
            cfg = r.expectation_config
            observed = res.get("observed_value")
            if observed is None and "unexpected_percent" in res:
                observed = f"{res['unexpected_count']} unexpected ({res['unexpected_percent']:.1f}%)"
            if r.exception_info and r.exception_info.get("raised_exception"):
                observed = f"error: {r.exception_info.get('exception_message')}"
            rows.append({"expectation": cfg.type, "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"},
                         "severity": str(getattr(cfg, "severity", "critical") or "critical").split(".")[-1].lower(),
                         "success": bool(r.success), "observed": observed})
    return rows


def validate(home: Path, run_id: str, suite: str, df, files: list[Path], cfg: SuiteConfig,
             label_names: list[str]) -> SuiteResult:
    """Run ``suite`` on ``df`` (read from ``files``). A blocked batch is copied to quarantine."""
    from lmchain.quality.suites import COLUMNS, build

    missing = [c for c in COLUMNS[suite] if c not in df.columns]
    if missing:
        raise InputError(f"gate: the {suite} batch {', '.join(map(str, files))} lacks column(s) {missing}; "
                         f"the {suite} suite needs {COLUMNS[suite]}")
    ref_file = reference_path(home, suite)
    reference = json.loads(ref_file.read_text()) if ref_file.is_file() else {}
    df = df.copy()
    df["chars"] = df["text"].astype(str).str.len()
    ctx = context(home)
    checkpoint = _checkpoint(ctx, suite, build(suite, cfg, label_names, reference))
    from great_expectations.core.run_identifier import RunIdentifier

    # Named after the pipeline run, so each run has its own page in Data Docs.
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_id))
    docs = ctx.get_docs_sites_urls()
    out = SuiteResult(suite, len(df), _checks(result), docs[0]["site_url"] if docs else "", batch_hash(files))
    out.warnings = [c for c in out.checks if not c["success"] and c["severity"] != "critical"]

    qdir = quarantine_dir(home, run_id, suite)
    acceptance = qdir / "accepted.json"
    if out.failed and acceptance.is_file():
        record = json.loads(acceptance.read_text())
        if record.get("batch_sha256") == out.batch_sha256:
            out.accepted = record  # a person released exactly this batch
    if out.failed and out.accepted is None:
        out.quarantine = str(_quarantine(qdir, files, out))
    if out.passed:
        from lmchain.quality.suites import distributions

        write_json(ref_file, distributions(suite, df))
    return out


def _quarantine(qdir: Path, files: list[Path], result: SuiteResult) -> Path:
    """Copy the batch aside with its validation result; the originals stay where they are."""
    qdir.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = qdir / f.name
        shutil.copy2(f, target)
        if sha256_file(target) != sha256_file(f):
            raise OSError(f"quarantine copy of {f} does not match the original")
    write_json(qdir / "validation.json", result.to_dict())
    write_json(qdir / "batch.json", {"suite": result.suite, "rows": result.rows, "batch_sha256": result.batch_sha256,
                                     "files": [str(f) for f in files], "quarantined_at": now_iso()})
    return qdir


def accept(home: Path, run_id: str, suite: str, reason: str) -> Path:
    """Release a quarantined batch: a recorded decision that the next gate run honours."""
    qdir = quarantine_dir(home, run_id, suite)
    batch = qdir / "batch.json"
    if not batch.is_file():
        held = sorted(str(p.relative_to(home / "quarantine")) for p in (home / "quarantine").glob("*/*")) \
            if (home / "quarantine").is_dir() else []
        raise InputError(f"no quarantined {suite} batch for run {run_id} in {qdir}; quarantined: {held or 'none'}")
    if not reason.strip():
        raise InputError("accepting a quarantined batch needs a --reason, which is recorded with it")
    record = {"run_id": run_id, "suite": suite, "accepted_at": now_iso(), "accepted_by": getpass.getuser(),
              "reason": reason, "batch_sha256": json.loads(batch.read_text())["batch_sha256"]}
    write_json(qdir / "accepted.json", record)
    return qdir / "accepted.json"
