"""Running a suite as a GX checkpoint; quarantine, acceptance and reference distributions.

State under the home (:class:`lmchain.home.Home`):

    gx/                                GX project: suites, checkpoints, results, Data Docs
    quarantine/<run_id>/<suite>/       a blocked batch: its files, failing_rows.jsonl, validation.json,
                                       batch.json; for a suite held by rows (feedback): rows.jsonl only
    quarantine/<run_id>/<suite>/accepted.json   written by `lmchain gate --accept`
    quality/reference/<suite>.json     distributions of the last accepted batch (for shift checks)

What a gate publishes (GX results, Data Docs, validation.json, MLflow) names failing rows by
their position in the batch and counts them; it never holds a value from the batch: texts come
from users and the web, and Data Docs are HTML. The failing rows themselves, with the names of
the expectations they failed, go to the quarantine folder, which only the operator can read
(folders 0700, files 0600).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmchain.artifacts import now_iso, read_json, sha256_file, write_json
from lmchain.config import SuiteConfig
from lmchain.home import Home
from lmchain.errors import InputError


# GX keeps the positions of failing rows, never their values: no partial_unexpected_list or
# _counts, no unexpected_rows, and no unexpected_index_query (for pandas a text that would grow
# with the batch). COMPLETE: every failing row's index, so that each one can be quarantined.
RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "exclude_unexpected_values": True,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}
INDEX_SAMPLE = 20  # row indices per check in validation.json; the quarantine holds them all


def _row_masks():
    """Aggregate expectations whose failure is still due to particular rows, and how to find them."""
    from lmchain.quality.expectations import duplicate_mask, overlap_mask

    return {
        "expect_column_duplicate_rate_to_be_between": lambda df, kw: duplicate_mask(df[kw["column"]]),
        "expect_no_text_overlap_between_splits": lambda df, kw: overlap_mask(
            df, kw.get("text_column", "text"), kw.get("split_column", "split"), kw.get("train_split", "train")
        ),
    }


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
    # Row index -> the failed critical expectations that name it (not serialised: see quarantine).
    row_failures: dict[int, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"] and c["severity"] == "critical"]

    @property
    def batch_failures(self) -> list[dict[str, Any]]:
        """Failed critical checks that no row is to blame for (row count, columns, shift...)."""
        return [c for c in self.failed if not c.get("failing_rows")]

    @property
    def passed(self) -> bool:
        return not self.failed or self.accepted is not None

    def failure_text(self) -> str:
        return "; ".join(f"{c['expectation']}({_short(c['kwargs'])}) observed {c['observed']}" for c in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "rows": self.rows,
            "passed": self.passed,
            "checks": self.checks,
            "docs_url": self.docs_url,
            "batch_sha256": self.batch_sha256,
            "accepted": self.accepted,
            "quarantine": self.quarantine,
        }


def _short(kwargs: dict) -> dict:
    # References are whole distributions: too long for a one-line message.
    return {k: v for k, v in kwargs.items() if k not in ("reference", "batch_id")}


def quarantine_dir(home: Home | Path, run_id: str, suite: str) -> Path:
    return Home.of(home).quarantine_dir(run_id, suite)


def reference_path(home: Home | Path, suite: str, task: str = "classification") -> Path:
    # A ner batch's distributions (entity types) never stand in for a classifier's (labels).
    return Home.of(home).quality_reference / (f"{suite}.json" if task == "classification" else f"{suite}.{task}.json")


def batch_hash(files: list[Path]) -> str:
    from lmchain.artifacts import sha256_text

    return sha256_text("".join(sha256_file(f) for f in sorted(files)))


def context(home: Home | Path):
    import great_expectations as gx

    import lmchain.quality.expectations  # noqa: F401 - registers the custom expectations

    ctx = gx.get_context(mode="file", project_root_dir=str(Home.of(home).root))  # GX's project: Home.gx
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
    vdef = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{suite}_vd", data=batch_def, suite=gx_suite)
    )
    return ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{suite}_gate",
            validation_definitions=[vdef],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format=RESULT_FORMAT,
        )
    )


def _failing_rows(r, df) -> list[int] | None:
    """Positions of the rows a failed check blames; None when the check is about the whole batch."""
    res = r.result or {}
    if "unexpected_index_list" in res:
        return sorted(int(i) for i in res["unexpected_index_list"])
    mask = _row_masks().get(r.expectation_config.type)
    if mask is None:
        return None
    return [int(i) for i in df.index[mask(df, r.expectation_config.kwargs).to_numpy()]]


def _checks(result, df) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    checks: list[dict[str, Any]] = []
    blamed: dict[int, list[str]] = {}
    for vres in result.run_results.values():
        for r in vres.results:
            res = r.result or {}
            cfg = r.expectation_config
            observed = res.get("observed_value")
            if observed is None and "unexpected_count" in res:
                pct = res.get("unexpected_percent")  # None on an empty batch
                observed = f"{res['unexpected_count']} unexpected" + (f" ({pct:.1f}%)" if pct is not None else "")
            if r.exception_info and r.exception_info.get("raised_exception"):
                observed = f"error: {r.exception_info.get('exception_message')}"
            severity = str(getattr(cfg, "severity", "critical") or "critical").split(".")[-1].lower()
            check = {
                "expectation": cfg.type,
                "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"},
                "severity": severity,
                "success": bool(r.success),
                "observed": observed,
            }
            if not r.success and severity == "critical":
                rows = _failing_rows(r, df)
                if rows is not None:
                    check["failing_rows"] = len(rows)
                    check["row_index_sample"] = rows[:INDEX_SAMPLE]
                    for i in rows:
                        blamed.setdefault(i, []).append(cfg.type)
            checks.append(check)
    return checks, blamed


def validate(
    home: Home | Path,
    run_id: str,
    suite: str,
    df,
    files: list[Path],
    cfg: SuiteConfig,
    label_names: list[str],
    hold: str = "batch",
    task: str = "classification",
) -> SuiteResult:
    """Run ``suite`` on ``df`` (read from ``files``) and quarantine what failed.

    ``hold="batch"``: a blocked batch is copied to quarantine whole, with its failing rows named.
    ``hold="rows"``: only the failing rows are quarantined (``rows.jsonl``), so that the caller
    can pass the others on; a failure no row is to blame for quarantines nothing (the caller
    keeps the whole batch back). ``task: ner`` checks spans in the labelled suite
    (:func:`lmchain.quality.suites.build`); ``label_names`` are then the entity types.
    """
    from lmchain.quality.suites import build, columns

    needed = columns(suite, task)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(
            f"gate: the {suite} batch {', '.join(map(str, files))} lacks column(s) {missing}; "
            f"the {suite} suite needs {needed}"
        )
    ref_file = reference_path(home, suite, task)
    reference = read_json(ref_file, {})
    df = df.reset_index(drop=True)  # GX reports failing rows by index: make it the row's position
    df["chars"] = df["text"].astype(str).str.len()
    ctx = context(home)
    checkpoint = _checkpoint(ctx, suite, build(suite, cfg, label_names, reference, task))
    from great_expectations.core.run_identifier import RunIdentifier

    # GX sees the suite's columns only: the column check reports the names it observed, and a
    # record's other keys come from whoever wrote the file (a key can be any text, a script too).
    checked = df[[*dict.fromkeys([*needed, "chars"])]]
    # Named after the pipeline run, so each run has its own page in Data Docs.
    result = checkpoint.run(batch_parameters={"dataframe": checked}, run_id=RunIdentifier(run_name=run_id))
    docs = ctx.get_docs_sites_urls()
    checks, blamed = _checks(result, df)
    out = SuiteResult(
        suite, len(df), checks, docs[0]["site_url"] if docs else "", batch_hash(files), row_failures=blamed
    )
    out.warnings = [c for c in out.checks if not c["success"] and c["severity"] != "critical"]

    qdir = quarantine_dir(home, run_id, suite)
    if hold == "rows":
        if out.failed and not out.batch_failures:
            out.quarantine = str(_quarantine_rows(home, run_id, qdir, files, out, df))
        if not out.batch_failures:
            from lmchain.quality.suites import distributions

            write_json(ref_file, distributions(suite, df.drop(index=list(blamed)), task))
        return out
    acceptance = qdir / "accepted.json"
    if out.failed and acceptance.is_file():
        record = json.loads(acceptance.read_text())
        if record.get("batch_sha256") == out.batch_sha256:
            out.accepted = record  # a person released exactly this batch
    if out.failed and out.accepted is None:
        out.quarantine = str(_quarantine(home, run_id, qdir, files, out, df))
    if out.passed:
        from lmchain.quality.suites import distributions

        write_json(ref_file, distributions(suite, df, task))
    return out


# ---------------------------------------------------------------------------- quarantine files


def private_dir(path: Path, top: Path) -> Path:
    """Create ``path`` (and the folders between it and ``top``) readable by the owner only."""
    path.mkdir(parents=True, exist_ok=True)
    for p in [path, *path.parents]:
        os.chmod(p, 0o700)
        if p == top or top not in p.parents:
            break
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically into a file only the owner can read (0600 from the start)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_private_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def write_private_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_private(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def failing_row_records(df, blamed: dict[int, list[str]]) -> list[dict[str, Any]]:
    """The failing rows as they were read (the gate's own ``chars`` column left out), with why."""
    rows = df.drop(columns=["chars"], errors="ignore").astype(object)
    rows = rows.where(rows.notna(), None)
    return [{"row": i, "reasons": sorted(set(blamed[i])), **rows.loc[i].to_dict()} for i in sorted(blamed)]


def _write_held(qdir: Path, rows_file: str, run_id: str, result: SuiteResult, files: list[Path], df, hold: str) -> Path:
    write_private_jsonl(qdir / rows_file, failing_row_records(df, result.row_failures))
    write_private_json(qdir / "validation.json", result.to_dict())
    write_private_json(
        qdir / "batch.json",
        {
            "run_id": run_id,
            "suite": result.suite,
            "rows": result.rows,
            "failing_rows": len(result.row_failures),
            "hold": hold,
            "batch_sha256": result.batch_sha256,
            "files": [str(f) for f in files],
            "quarantined_at": now_iso(),
        },
    )
    return qdir


def _quarantine(home: Home | Path, run_id: str, qdir: Path, files: list[Path], result: SuiteResult, df) -> Path:
    """Copy the batch aside with its failing rows and validation result; the originals stay."""
    private_dir(qdir, Home.of(home).quarantine)
    for f in files:
        target = qdir / f.name
        shutil.copyfile(f, target)
        os.chmod(target, 0o600)
        if sha256_file(target) != sha256_file(f):
            raise OSError(f"quarantine copy of {f} does not match the original")
    return _write_held(qdir, "failing_rows.jsonl", run_id, result, files, df, "batch")


def _quarantine_rows(home: Home | Path, run_id: str, qdir: Path, files: list[Path], result: SuiteResult, df) -> Path:
    """Hold the failing rows only; a rerun of the same run replaces them (same batch, same rows)."""
    private_dir(qdir, Home.of(home).quarantine)
    return _write_held(qdir, "rows.jsonl", run_id, result, files, df, "rows")


def accept(home: Home | Path, run_id: str, suite: str, reason: str) -> Path:
    """Release a quarantined batch: a recorded decision that the next gate run honours."""
    root = Home.of(home).quarantine
    qdir = quarantine_dir(home, run_id, suite)
    batch = qdir / "batch.json"
    if not batch.is_file():
        held = sorted(str(p.relative_to(root)) for p in root.glob("*/*")) if root.is_dir() else []
        raise InputError(f"no quarantined {suite} batch for run {run_id} in {qdir}; quarantined: {held or 'none'}")
    if not reason.strip():
        raise InputError("accepting a quarantined batch needs a --reason, which is recorded with it")
    info = json.loads(batch.read_text())
    if info.get("hold") == "rows":
        raise InputError(
            f"the {suite} quarantine of run {run_id} holds rows, not a batch: release them with "
            f"`lmchain feedback release --run-id {run_id} --reason ...`"
        )
    record = {
        "run_id": run_id,
        "suite": suite,
        "accepted_at": now_iso(),
        "accepted_by": getpass.getuser(),
        "reason": reason,
        "batch_sha256": info["batch_sha256"],
    }
    write_private_json(qdir / "accepted.json", record)
    return qdir / "accepted.json"
