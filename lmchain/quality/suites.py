"""The four expectation suites, built from the per-suite thresholds in the recipe.

``raw`` (collected records), ``curated`` (the curated corpus), ``labelled`` (the labelled
splits, one table with a ``split`` column) and ``feedback`` (feedback batches). Expectations
named in a suite's ``warn`` list get GX's ``warning`` severity: they are reported, not halting.
"""

from __future__ import annotations

from typing import Any

from lmchain.config import SuiteConfig

LENGTH_BUCKETS = [8, 16, 32, 64, 128]  # word counts: the length distribution compared across batches

# Columns each suite's batch must have.
COLUMNS = {
    "raw": ["id", "text", "source"],
    "curated": ["id", "text", "source"],
    "labelled": ["id", "text", "label", "split"],
    "feedback": ["text", "predicted_label", "correct_label"],
}
# task: ner: the labelled splits hold spans instead of a label (the other suites are the same).
NER_COLUMNS = {**COLUMNS, "labelled": ["id", "text", "entities", "split"]}


def columns(suite: str, task: str = "classification") -> list[str]:
    return (NER_COLUMNS if task == "ner" else COLUMNS)[suite]


def _severity(name: str, cfg: SuiteConfig) -> dict[str, Any]:
    return {"severity": "warning"} if name in cfg.warn else {}


def build(
    suite: str, cfg: SuiteConfig, label_names: list[str], reference: dict[str, dict], task: str = "classification"
) -> list:
    """The expectations of ``suite``; ``reference`` holds the last accepted batch's distributions.

    ``task: ner`` changes the ``labelled`` suite only: ``label_names`` are the entity types, and
    the label checks become span checks (valid spans, types in the set, each type's share)."""
    import great_expectations as gx

    from lmchain.quality import expectations as X

    E = gx.expectations
    items: list[tuple[str, Any]] = [
        (
            "expect_table_columns_to_match_set",
            lambda **s: E.ExpectTableColumnsToMatchSet(column_set=columns(suite, task), exact_match=False, **s),
        ),
        (
            "expect_table_row_count_to_be_between",
            lambda **s: E.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows, **s),
        ),
        ("expect_column_values_to_not_be_null", lambda **s: E.ExpectColumnValuesToNotBeNull(column="text", **s)),
        (
            "expect_column_value_lengths_to_be_between",
            lambda **s: E.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=cfg.min_chars, max_value=cfg.max_chars, **s
            ),
        ),
    ]
    if suite in ("raw", "curated", "labelled"):
        items.append(
            ("expect_column_values_to_be_unique", lambda **s: E.ExpectColumnValuesToBeUnique(column="id", **s))
        )
    if suite in ("curated", "labelled", "feedback"):
        items += [
            (
                "expect_column_duplicate_rate_to_be_between",
                lambda **s: X.ExpectColumnDuplicateRateToBeBetween(
                    column="text", max_value=cfg.max_duplicate_rate, **s
                ),
            ),
            (
                "expect_column_values_to_not_contain_pii",
                lambda **s: X.ExpectColumnValuesToNotContainPii(column="text", mostly=1.0 - cfg.max_pii_rate, **s),
            ),
            (
                "expect_column_values_to_be_in_language",
                lambda **s: X.ExpectColumnValuesToBeInLanguage(
                    column="text", language=cfg.language, mostly=cfg.min_language_share, **s
                ),
            ),
        ]
    if suite == "curated":
        items += [
            (
                "expect_column_mean_to_be_between",
                lambda **s: E.ExpectColumnMeanToBeBetween(
                    column="chars", min_value=0, max_value=cfg.max_mean_chars, **s
                ),
            ),
            (
                "expect_column_shift_from_reference_to_be_below",
                lambda **s: X.ExpectColumnShiftFromReferenceToBeBelow(
                    column="text",
                    buckets=LENGTH_BUCKETS,
                    reference=reference.get("length", {}),
                    max_value=cfg.max_length_shift,
                    **s,
                ),
            ),
        ]
    if task == "ner" and suite == "labelled":
        items += [
            ("expect_column_pair_values_to_be_valid_spans", lambda **s: X.ExpectColumnPairValuesToBeValidSpans(**s)),
            (
                "expect_column_entity_labels_to_be_in_set",
                lambda **s: X.ExpectColumnEntityLabelsToBeInSet(column="entities", value_set=label_names, **s),
            ),
            (
                "expect_column_entity_type_share_to_be_at_least",
                lambda **s: X.ExpectColumnEntityTypeShareToBeAtLeast(
                    column="entities", value_set=label_names, min_value=cfg.min_class_share, **s
                ),
            ),
            ("expect_no_text_overlap_between_splits", lambda **s: X.ExpectNoTextOverlapBetweenSplits(**s)),
        ]
        return [make(**_severity(name, cfg)) for name, make in items]
    label_column = {"labelled": "label", "feedback": "correct_label"}.get(suite)
    if label_column:
        items.append(
            (
                "expect_column_values_to_be_in_set",
                lambda **s: E.ExpectColumnValuesToBeInSet(column=label_column, value_set=label_names, **s),
            )
        )
    if suite == "labelled":
        items += [
            (
                "expect_column_minority_share_to_be_at_least",
                lambda **s: X.ExpectColumnMinorityShareToBeAtLeast(
                    column="label", value_set=label_names, min_value=cfg.min_class_share, **s
                ),
            ),
            ("expect_no_text_overlap_between_splits", lambda **s: X.ExpectNoTextOverlapBetweenSplits(**s)),
            (
                "expect_column_shift_from_reference_to_be_below",
                lambda **s: X.ExpectColumnShiftFromReferenceToBeBelow(
                    column="label", reference=reference.get("label", {}), max_value=cfg.max_label_shift, **s
                ),
            ),
        ]
    return [make(**_severity(name, cfg)) for name, make in items]


def distributions(suite: str, df, task: str = "classification") -> dict[str, dict[str, float]]:
    """What the next batch is compared against once this one is accepted."""
    from lmchain.quality.expectations import bucketise, entity_types_of, shares

    out = {"length": shares(bucketise(df["text"], LENGTH_BUCKETS))}
    if task == "ner" and suite == "labelled":
        types = entity_types_of(df["entities"])
        out["entity_type"] = {k: v / (sum(types.values()) or 1) for k, v in sorted(types.items(), key=str)}
        return out
    if suite == "labelled":
        out["label"] = shares(df["label"])
    if suite == "feedback":
        out["label"] = shares(df["correct_label"])
    return out
