"""evaluate and register: the champion/challenger decision and the MLflow names."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from lmchain.config.base import Section, doc, model_validator, problems


class EvaluateConfig(Section):
    KEY = "evaluate"
    batch_size: int = doc("Inference batch size.", 64, ge=1)
    slices: list[str] = doc(
        "Slice families: 'length' (word-count buckets), 'label', or any example field such as 'source'.",
        factory=lambda: ["length", "label", "source"],
    )
    length_buckets: list[int] = doc("Word-count bucket edges of the 'length' slices.", factory=lambda: [8, 16, 32])
    ece_bins: int = doc("Confidence bins of the calibration error and reliability diagram.", 10, ge=2)
    margin: float = doc("Promote only when the CI lower bound of the accuracy gain exceeds this.", 0.0)
    confidence: float = doc("Confidence level of the paired bootstrap interval.", 0.95, ge=0.5, lt=1)
    bootstrap_samples: int = doc("Paired bootstrap resamples.", 2000, ge=100)
    guarded_slices: list[str] = doc(
        "Slice families that must not regress for a promotion.", factory=lambda: ["length", "label"]
    )
    slice_tolerance: float = doc("Largest accuracy drop allowed on a guarded slice.", 0.03)
    min_slice_size: int = doc("Guard only slices with at least this many test examples.", 30)
    slice_test: Literal["significant", "observed"] = doc(
        "When a guarded slice counts as regressed: 'significant' = it dropped by more than the tolerance and its "
        "paired bootstrap CI lies below zero (the drop is beyond noise); 'observed' = any drop beyond the "
        "tolerance.",
        "significant",
    )
    seed: int = doc("Seed of the bootstrap.", 0)

    @model_validator(mode="after")
    def _slices(self) -> Any:
        found = []
        if self.length_buckets != sorted(set(self.length_buckets)):
            found.append(("length_buckets", "must be strictly increasing"))
        unknown = set(self.guarded_slices) - set(self.slices)
        if unknown:
            found.append(("guarded_slices", f"{sorted(unknown)} not in evaluate.slices"))
        return problems(self, found)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class RegisterConfig(Section):
    KEY = "register"
    model_name: Annotated[str, AfterValidator(_not_blank)] = doc("MLflow registered model name.", "lmchain-classifier")
    experiment: str = doc("MLflow experiment that holds the pipeline's runs.", "lmchain")
