"""The feedback loop: export what users corrected, gate it, merge it into the labels, decide.

Stages of the ``lmchain_feedback`` DAG, each a function like the pipeline's stages:

1. ``export``: feedback records the watermark does not cover yet (store ids) to ``batch.jsonl``.
   Export only reads the watermark. A rerun of the same DAG run reuses its batch.
2. ``gate``: the GX ``feedback`` suite (label set, PII, language, ...), row by row: failing rows
   go to ``LMCHAIN_HOME/quarantine/<run_id>/feedback/rows.jsonl`` (operator-only) with the
   expectations they failed, the others go on. ``lmchain feedback release`` lets a person
   release held rows (with a reason, dropping some); they merge in the next run. A failure no
   row is to blame for (too few rows) holds the batch back: it is exported again next time.
3. ``merge``: corrected labels go into ``LMCHAIN_HOME/feedback/labels.jsonl``, one row per
   normalised text (the latest correction wins), with provenance ``feedback``. The pipeline's
   collect and annotate stages read this file (``feedback.include_in_training``). Then, and
   only then, the watermark moves past the batch: every row up to it is in the labels or held
   in a quarantine. Labels, watermark and release records change under one file lock.
4. ``decide``: retrain when ``min_new_labels`` labels arrived since the last trigger, or when
   the share of feedback that corrects the model exceeds ``max_error_rate`` (drift). The reason
   is recorded; the DAG turns a positive decision into an Asset event that schedules
   ``lmchain_pipeline``.
"""

from __future__ import annotations

from pathlib import Path

FEEDBACK_STAGES = ("export", "gate", "merge", "decide")


def feedback_dir(home: Path) -> Path:
    return home / "feedback"


def labels_path(home: Path) -> Path:
    return feedback_dir(home) / "labels.jsonl"
