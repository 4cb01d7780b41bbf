"""gate: thresholds of the Great Expectations suites (raw, curated, labelled, feedback)."""

from __future__ import annotations

from typing import Any, Literal

from lmchain.config.base import Section, doc, model_validator, problems


class SuiteConfig(Section):
    """Thresholds of one expectation suite; each suite uses the checks that fit its data."""

    KEY = "gate.<suite>"
    min_rows: int = doc("Block batches with fewer rows than this.", 1, ge=0)
    min_chars: int = doc("Every text must be at least this long (1: no empty texts).", 1)
    max_chars: int = doc("Every text must be at most this long.", 20000)
    max_mean_chars: int = doc("Block when the mean text length exceeds this (boilerplate pages; curated).", 5000)
    max_duplicate_rate: float = doc("Largest share of texts that repeat another after normalisation.", 0.05, ge=0, le=1)
    max_pii_rate: float = doc("Largest share of texts with an e-mail, phone, IP or card number.", 0.0, ge=0, le=1)
    language: Literal["en"] = doc(
        "Expected language of the texts (built-in detector: 'en').", "en", hint="the built-in detector knows 'en' only"
    )
    min_language_share: float = doc("Smallest share of texts in that language.", 0.9, ge=0, le=1)
    max_length_shift: float = doc(
        "Largest Jensen-Shannon divergence of the word-count distribution from the last accepted batch (curated).", 0.1
    )
    min_class_share: float = doc("Smallest share of any label (labelled).", 0.1, ge=0, le=1)
    max_label_shift: float = doc(
        "Largest Jensen-Shannon divergence of the label distribution from the last accepted batch (labelled).", 0.05
    )
    warn: list[str] = doc("Expectations (snake_case type) that only warn instead of blocking.", factory=list)

    @model_validator(mode="after")
    def _lengths(self) -> Any:
        return problems(self, [("max_chars", "must be >= min_chars")] if self.max_chars < self.min_chars else [])


class GateConfig(Section):
    KEY = "gate"
    raw: SuiteConfig = doc(
        "Suite 'raw' on the collected records.", factory=lambda: SuiteConfig(min_chars=0, max_chars=10**7)
    )
    curated: SuiteConfig = doc("Suite 'curated' on the curated corpus.", factory=lambda: SuiteConfig(min_rows=100))
    labelled: SuiteConfig = doc("Suite 'labelled' on the labelled splits.", factory=lambda: SuiteConfig(min_rows=50))
    feedback: SuiteConfig = doc(
        "Suite 'feedback' on feedback batches.", factory=lambda: SuiteConfig(max_duplicate_rate=1.0)
    )
