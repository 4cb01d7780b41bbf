"""Feedback rows the gate held back, and their release by a person.

The feedback gate quarantines failing rows, not batches: ``quarantine/<run_id>/feedback/rows.jsonl``
(operator-only, 0600) holds each row with the expectations it failed; the rest of the batch goes
on to merge. The watermark then moves past the held rows: they are not lost, they wait here.

``lmchain feedback release --run-id RUN --reason WHY [--drop ROW ...]`` records a decision in
``release.json`` beside them (who, when, why, which rows are released and which dropped). The
next feedback run's merge folds the released rows into the labels and writes ``merged_in`` into
that record, so a row is merged once.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmchain.artifacts import now_iso, read_json, read_jsonl
from lmchain.errors import InputError
from lmchain.home import Home

SUITE = "feedback"
ROWS = "rows.jsonl"
RELEASE = "release.json"


def held_dirs(home: Home | Path) -> list[Path]:
    root = Home.of(home).quarantine
    return sorted(p.parent for p in root.glob(f"*/{SUITE}/{ROWS}")) if root.is_dir() else []


def held_rows(qdir: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(qdir / ROWS))


def release_record(qdir: Path) -> dict[str, Any] | None:
    return read_json(qdir / RELEASE)


def summary(home: Home | Path) -> list[dict[str, Any]]:
    """Every feedback quarantine: run, rows held, why, and whether (and when) they were released."""
    out = []
    for qdir in held_dirs(home):
        rows = held_rows(qdir)
        record = release_record(qdir)
        batch = qdir / "batch.json"
        run_id = read_json(batch, {}).get("run_id")
        out.append(
            {
                "run_id": run_id or qdir.parent.name,
                "folder": str(qdir),
                "rows": [{"row": r["row"], "store_id": r.get("store_id"), "reasons": r["reasons"]} for r in rows],
                "release": record,
            }
        )
    return out


def _qdir(home: Home | Path, run_id: str) -> Path:
    from lmchain.quality.gate import quarantine_dir

    qdir = quarantine_dir(home, run_id, SUITE)
    if not (qdir / ROWS).is_file():
        held = [p.parent.name for p in held_dirs(home)]
        raise InputError(
            f"no quarantined feedback rows for run {run_id} (looked in {qdir}); runs with held "
            f"rows: {', '.join(held) or 'none'}. List them with `lmchain feedback quarantine`"
        )
    return qdir


def release(home: Home | Path, run_id: str, reason: str, drop: list[int] | None = None) -> Path:
    """Release the held rows of ``run_id`` (all but ``drop``) for the next merge; recorded with ``reason``."""
    from lmchain.feedback import labels_path
    from lmchain.locking import file_lock
    from lmchain.quality.gate import write_private_json

    if not reason or not reason.strip():
        raise InputError("releasing quarantined feedback rows needs a --reason, which is recorded with them")
    qdir = _qdir(home, run_id)
    rows = {r["row"] for r in held_rows(qdir)}
    drop = sorted(set(drop or []))
    unknown = [r for r in drop if r not in rows]
    if unknown:
        raise InputError(
            f"--drop {unknown}: run {run_id} holds rows {sorted(rows)} only (the 'row' numbers of "
            "`lmchain feedback quarantine`)"
        )
    # The merge reads and marks release records under this lock: a release never races a merge.
    with file_lock(labels_path(home)):
        previous = release_record(qdir)
        if previous is not None:
            raise InputError(
                f"the feedback rows of run {run_id} were already released on "
                f"{previous['released_at']} by {previous['released_by']} ({previous['reason']!r}); "
                "a release is final"
            )
        record = {
            "run_id": run_id,
            "released_at": now_iso(),
            "released_by": getpass.getuser(),
            "reason": reason.strip(),
            "released_rows": sorted(rows - set(drop)),
            "dropped_rows": drop,
            "merged_in": None,
        }
        write_private_json(qdir / RELEASE, record)
    return qdir / RELEASE


@dataclass
class Pending:
    """Released rows not merged yet, and where their record is."""

    qdir: Path
    record: dict[str, Any]
    rows: list[dict[str, Any]]


def pending(home: Home | Path) -> list[Pending]:
    """Released rows that no merge has folded in yet (call with the labels lock held)."""
    out = []
    for qdir in held_dirs(home):
        record = release_record(qdir)
        if record is None or record.get("merged_in"):
            continue
        keep = set(record["released_rows"])
        out.append(Pending(qdir, record, [r for r in held_rows(qdir) if r["row"] in keep]))
    return out


def mark_merged(item: Pending, run_id: str) -> None:
    from lmchain.quality.gate import write_private_json

    write_private_json(item.qdir / RELEASE, {**item.record, "merged_in": run_id, "merged_at": now_iso()})
