"""feedback: when corrections posted to the service retrain the model."""

from __future__ import annotations

from lmchain.config.base import Section, doc


class FeedbackConfig(Section):
    """The feedback loop: corrections posted to the service become labels of the next run."""

    KEY = "feedback"
    include_in_training: bool = doc(
        "Add the merged feedback labels (<home>/feedback/labels.jsonl) to "
        "collect and annotate; a correction wins over the original label.",
        True,
    )
    min_new_labels: int = doc("Trigger lmchain_pipeline once this many new corrected labels have arrived.", 50, ge=1)
    max_error_rate: float = doc(
        "Drift: also trigger when the share of feedback that corrects the model "
        "exceeds this (over at least min_batch_for_drift records).",
        0.5,
        ge=0,
        le=1,
    )
    min_batch_for_drift: int = doc("Feedback records needed before the error rate counts as drift.", 20, ge=1)
