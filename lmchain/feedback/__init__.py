"""The feedback loop's files and pieces: users' corrections merged into
``<home>/feedback/labels.jsonl`` (which the pipeline's collect and annotate stages read,
see :func:`with_feedback_labels`), the watermark (:mod:`~lmchain.feedback.watermark`) and the
row quarantine (:mod:`~lmchain.feedback.quarantine`). The ``lmchain_feedback`` DAG's stages are
in :mod:`lmchain.stages.feedback`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lmchain.home import Home

if TYPE_CHECKING:
    from lmchain.config import PipelineConfig


def labels_path(home: Home | Path) -> Path:
    return Home.of(home).feedback_labels


def with_feedback_labels(cfg: PipelineConfig, lm_home: Home | Path) -> PipelineConfig:
    """The config with the merged feedback labels added to collect and annotate (when enabled)."""
    from lmchain.config import FileSource, LabelSource, replace

    target = labels_path(lm_home)
    if cfg.task != "classification":
        return cfg  # the feedback labels are (text, label) rows; span corrections come with the NER serving path
    if not cfg.feedback.include_in_training or not target.is_file() or target.stat().st_size == 0:
        return cfg
    # Not windowed: a nightly run reads only new files, but always all the accumulated feedback.
    collect = replace(cfg.collect, files=[*cfg.collect.files, FileSource(path=str(target), windowed=False)])
    # Lenient: one odd feedback row becomes a reject rather than failing the night's run.
    feedback = LabelSource(
        path=str(target), text_field="text", label_field="label", precedence=1, provenance="feedback", strict=False
    )
    annotate = replace(cfg.annotate, labels=[*cfg.annotate.labels, feedback])
    return replace(cfg, collect=collect, annotate=annotate)
