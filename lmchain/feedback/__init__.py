"""The feedback loop: export what users corrected, gate it, merge it into the labels, decide.

Stages of the ``lmchain_feedback`` DAG, each a function like the pipeline's stages:

1. ``export``: feedback records newer than the last export (a watermark on the store's ids) to
   ``batch.jsonl``. A rerun of the same DAG run reuses its batch, so nothing is exported twice
   or skipped.
2. ``gate``: the GX ``feedback`` suite (label set, PII, language, ...); a failing batch is
   quarantined and the run stops, as in the pipeline's gates.
3. ``merge``: corrected labels go into ``LMCHAIN_HOME/feedback/labels.jsonl``, one row per
   normalised text (the latest correction wins), with provenance ``feedback``. The pipeline's
   collect and annotate stages read this file (``feedback.include_in_training``).
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
