"""Text-specific Great Expectations: custom expectations with their metric providers.

GX's built-in expectations are made for tables. These add what a text corpus needs: residual
PII, language share, near-exact duplicate rate, train/test overlap, class balance and
distribution shift against the last accepted batch; and, for ``task: ner``, spans that are
valid for their text (what a valid BIO tagging needs), entity types in the label set and the
share of each type. Importing this module registers them with
GX (its metric and expectation registries), so suites stored in the GX project can name them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import ClassVar, Literal, Optional

import pandas as pd
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import (
    BatchExpectation,
    ColumnAggregateExpectation,
    ColumnMapExpectation,
    ColumnPairMapExpectation,
)
from great_expectations.expectations.metrics import (
    ColumnAggregateMetricProvider,
    ColumnMapMetricProvider,
    column_aggregate_value,
    column_condition_partial,
)
from great_expectations.expectations.metrics.map_metric_provider.column_pair_condition_partial import (
    column_pair_condition_partial,
)
from great_expectations.expectations.metrics.map_metric_provider.column_pair_map_metric_provider import (
    ColumnPairMapMetricProvider,
)
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from lmchain.curate.pii import pii_kinds
from lmchain.text import normalise_for_dedup
from lmchain.text_spans import span_problem

# ---------------------------------------------------------------------------- detectors

# PII: curate's own rules (lmchain.curate.pii.pii_kinds), so what curate leaves in, the gate
# would also see, and the phone/IP false-positive checks hold in both places.

# A dependency-free English detector for the gate: the share of tokens that are among the most
# common English function words. Real text scores 0.2-0.6; other languages score near 0. The
# curation issue brings a proper language-id model; this check only has to catch wrong batches.
ENGLISH_STOPWORDS = frozenset(
    "the a an and or but of to in on at for with by from as is are was were be been being it its this that "
    "these those he she they we you i his her their our your my not no so if then than too very can will "
    "just do does did have has had what which who whom there here all any some more most such only own same "
    "about into over after before again further once up down out off under while because until".split()
)
_WORD = re.compile(r"[A-Za-z']+|[^\W\d_]+", re.UNICODE)


def english_score(text: str) -> float:
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return 0.0
    return sum(w in ENGLISH_STOPWORDS for w in words) / len(words)


def is_language(text: str, language: str, min_score: float = 0.08) -> bool:
    if language != "en":
        raise ValueError(f"language '{language}' is not supported by the built-in detector; use 'en'")
    # Very short texts ("great film!") carry too few words to judge; they count as in-language.
    return len(text.split()) < 4 or english_score(text) >= min_score


def js_divergence(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two discrete distributions."""
    keys = set(p) | set(q)
    m = {k: (p.get(k, 0.0) + q.get(k, 0.0)) / 2 for k in keys}

    def kl(a):
        return sum(a.get(k, 0.0) * math.log2(a.get(k, 0.0) / m[k]) for k in keys if a.get(k, 0.0) > 0)

    return 0.5 * kl(p) + 0.5 * kl(q)


def duplicate_mask(column: pd.Series) -> pd.Series:
    """Rows whose normalised text repeats an earlier row's (the first of each text is not marked)."""
    return column.astype(str).map(normalise_for_dedup).duplicated()


def overlap_mask(df: pd.DataFrame, text: str = "text", split: str = "split", train_split: str = "train") -> pd.Series:
    """Evaluation rows (any split but ``train_split``) whose normalised text is also a training text."""
    keys = df[text].astype(str).map(normalise_for_dedup)
    is_train = df[split].astype(str) == train_split
    return ~is_train & keys.isin(set(keys[is_train]))


def shares(values) -> dict[str, float]:
    counts = Counter(str(v) for v in values)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in sorted(counts.items())}


# ---------------------------------------------------------------------------- metrics


class ColumnValuesWithoutPii(ColumnMapMetricProvider):
    condition_metric_name = "column_values.lmchain_no_pii"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.astype(str).map(lambda t: not pii_kinds(t))


class ColumnValuesInLanguage(ColumnMapMetricProvider):
    condition_metric_name = "column_values.lmchain_in_language"
    condition_value_keys = ("language",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, language, **kwargs):
        return column.astype(str).map(lambda t: is_language(t, language))


class ColumnDuplicateRate(ColumnAggregateMetricProvider):
    metric_name = "column.lmchain_duplicate_rate"

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return float(duplicate_mask(column).mean()) if len(column) else 0.0


class ColumnMinorityShare(ColumnAggregateMetricProvider):
    metric_name = "column.lmchain_minority_share"
    value_keys = ("value_set",)

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column, value_set, **kwargs):
        counts = column.astype(str).value_counts()
        total = int(counts.sum()) or 1
        return float(min(counts.get(str(v), 0) for v in value_set) / total)


class ColumnShiftFromReference(ColumnAggregateMetricProvider):
    metric_name = "column.lmchain_js_shift"
    value_keys = ("reference", "buckets")

    @column_aggregate_value(engine=PandasExecutionEngine)
    def _pandas(cls, column, reference, buckets, **kwargs):
        if not reference:
            return 0.0  # first accepted batch: nothing to compare against
        return float(js_divergence(shares(bucketise(column, buckets)), reference))


def bucketise(column: pd.Series, buckets: Optional[list]) -> pd.Series:
    """Categorical values as they are; with ``buckets``, word counts binned at those edges."""
    if not buckets:
        return column.astype(str)
    counts = column.astype(str).str.split().str.len()
    labels = [f"<={b}" for b in buckets] + [f">{buckets[-1]}"]
    return pd.cut(counts, [-1, *buckets, float("inf")], labels=labels).astype(str)


# ---------------------------------------------------------------------------- expectations


class ExpectColumnValuesToNotContainPii(ColumnMapExpectation):
    """Texts contain no e-mail address, phone number, IP address, (Luhn-valid) card number or
    (mod-97-valid) IBAN: the kinds curate redacts, found by the same rules.

    ``mostly`` sets the share of texts that must be clean (1 - the tolerated PII rate).
    """

    map_metric: ClassVar[str] = "column_values.lmchain_no_pii"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)


class ExpectColumnValuesToBeInLanguage(ColumnMapExpectation):
    """At least ``mostly`` of the texts are in ``language`` (built-in detector: 'en')."""

    language: str = "en"
    map_metric: ClassVar[str] = "column_values.lmchain_in_language"
    success_keys: ClassVar[tuple[str, ...]] = ("language", "mostly")


class ExpectColumnDuplicateRateToBeBetween(ColumnAggregateExpectation):
    """Share of texts that repeat an earlier one after lower-casing and punctuation removal."""

    min_value: float = 0.0
    max_value: float = 0.1
    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.lmchain_duplicate_rate",)
    success_keys: ClassVar[tuple[str, ...]] = ("min_value", "max_value")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        rate = metrics["column.lmchain_duplicate_rate"]
        return {"success": self.min_value <= rate <= self.max_value, "result": {"observed_value": rate}}


class ExpectColumnMinorityShareToBeAtLeast(ColumnAggregateExpectation):
    """Class balance: every value of ``value_set`` makes up at least ``min_value`` of the rows."""

    value_set: list
    min_value: float = 0.1
    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.lmchain_minority_share",)
    success_keys: ClassVar[tuple[str, ...]] = ("value_set", "min_value")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        share = metrics["column.lmchain_minority_share"]
        return {"success": share >= self.min_value, "result": {"observed_value": share}}


class ExpectColumnShiftFromReferenceToBeBelow(ColumnAggregateExpectation):
    """Jensen-Shannon divergence between this batch's distribution of the column (categories, or
    word-count buckets) and the last accepted batch's stays at most ``max_value``."""

    reference: dict = {}
    buckets: Optional[list] = None
    max_value: float = 0.1
    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.lmchain_js_shift",)
    success_keys: ClassVar[tuple[str, ...]] = ("reference", "buckets", "max_value")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        shift = metrics["column.lmchain_js_shift"]
        return {"success": shift <= self.max_value, "result": {"observed_value": shift}}


class TableSplitOverlap(TableMetricProvider):
    """How many evaluation rows (any split but ``train_split``) repeat a training text."""

    metric_name = "table.lmchain_split_overlap"
    value_keys = ("text_column", "split_column", "train_split")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        df, _, _ = execution_engine.get_compute_domain(
            domain_kwargs=metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
        )
        return int(
            overlap_mask(
                df,
                metric_value_kwargs["text_column"],
                metric_value_kwargs["split_column"],
                metric_value_kwargs["train_split"],
            ).sum()
        )


class ExpectNoTextOverlapBetweenSplits(BatchExpectation):
    """No validation or test text (normalised) also appears in the training split: leakage."""

    text_column: str = "text"
    split_column: str = "split"
    train_split: str = "train"
    metric_dependencies: ClassVar[tuple[str, ...]] = ("table.lmchain_split_overlap",)
    success_keys: ClassVar[tuple[str, ...]] = ("text_column", "split_column", "train_split")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        overlap = metrics["table.lmchain_split_overlap"]
        return {"success": overlap == 0, "result": {"observed_value": overlap}}


# ---------------------------------------------------------------------------- entity spans (task: ner)


def entity_types_of(column: pd.Series) -> Counter:
    """How many entities of each type the rows' ``entities`` lists hold (a row that is not a list holds none)."""
    return Counter(e.get("label") for v in column if isinstance(v, list) for e in v if isinstance(e, dict))


def type_share(column: pd.Series, value_set: list) -> float:
    """The smallest share of all entities that one type of ``value_set`` has (0 with no entity)."""
    counts = entity_types_of(column)
    total = sum(counts.values())
    return float(min(counts.get(t, 0) for t in value_set) / total) if total and value_set else 0.0


class ColumnPairValidSpans(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.lmchain_valid_spans"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_A",
        "column_B",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, **kwargs):
        return pd.Series(
            [isinstance(t, str) and span_problem(t, e) is None for t, e in zip(column_A, column_B)],
            index=column_A.index,
        )


class ColumnEntityLabelsInSet(ColumnMapMetricProvider):
    condition_metric_name = "column_values.lmchain_entity_labels_in_set"
    condition_value_keys = ("value_set",)
    filter_column_isnull = False  # a row without its spans is a failure, not a skip

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, value_set, **kwargs):
        known = set(value_set)
        return column.map(
            lambda v: isinstance(v, list) and all(isinstance(e, dict) and e.get("label") in known for e in v)
        )


class ColumnEntityTypeShare(ColumnAggregateMetricProvider):
    metric_name = "column.lmchain_entity_type_share"
    value_keys = ("value_set",)

    @column_aggregate_value(engine=PandasExecutionEngine, filter_column_isnull=False)
    def _pandas(cls, column, value_set, **kwargs):
        return type_share(column, value_set)


class ExpectColumnPairValuesToBeValidSpans(ColumnPairMapExpectation):
    """Every row's entity spans (``column_B``) are valid for its text (``column_A``): integer
    offsets with 0 <= start < end <= len(text), no whitespace at either end, none overlapping.
    These are exactly the span sets that have a BIO tagging converting back to the same spans
    (:func:`lmchain.text_spans.spans_to_bio`): the NER suite's "valid BIO"."""

    column_A: str = "text"
    column_B: str = "entities"
    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = "neither"
    map_metric: ClassVar[str] = "column_pair_values.lmchain_valid_spans"
    success_keys: ClassVar[tuple[str, ...]] = ("column_A", "column_B", "ignore_row_if", "mostly")


class ExpectColumnEntityLabelsToBeInSet(ColumnMapExpectation):
    """Every entity of every row has a type of ``value_set`` (``annotate.entity_types``)."""

    value_set: list
    map_metric: ClassVar[str] = "column_values.lmchain_entity_labels_in_set"
    success_keys: ClassVar[tuple[str, ...]] = ("value_set", "mostly")


class ExpectColumnEntityTypeShareToBeAtLeast(ColumnAggregateExpectation):
    """Class balance for spans: each type of ``value_set`` is at least ``min_value`` of all entities."""

    value_set: list
    min_value: float = 0.1
    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.lmchain_entity_type_share",)
    success_keys: ClassVar[tuple[str, ...]] = ("value_set", "min_value")

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        share = metrics["column.lmchain_entity_type_share"]
        return {"success": share >= self.min_value, "result": {"observed_value": share}}
