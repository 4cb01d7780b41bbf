"""annotate: label files, semi-automatic labels, the review queue and the splits."""

from __future__ import annotations

import typing
from typing import Any, Literal

from lmchain.config.base import Section, doc, model_validator, problems


class LabelSource(Section):
    """A file of (text, label) pairs, joined onto the curated corpus by normalised text."""

    KEY = "annotate.labels[]"
    path: str = doc("CSV/TSV/JSONL file with a text and a label column. `${SST2}` expands.")
    text_field: str = doc("Column holding the text.", "text")
    label_field: str = doc("Column holding the label.", "label")
    limit: int | None = doc("Read at most this many labelled rows (None: all).", None)
    precedence: int = doc(
        "When sources disagree on a text's label, the higher precedence wins (user "
        "corrections from feedback: 1); votes of equal precedence are aggregated.",
        0,
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "label-studio"] = doc(
        "'auto' (by extension; a .json file holding a list is a Label Studio export), 'csv', 'tsv', 'jsonl' or "
        "'label-studio' (the JSON export: tasks with annotations, or JSON-MIN).",
        "auto",
    )
    label_map: dict = doc(
        "Raw label -> label name, applied before matching annotate.label_names "
        "(e.g. {Positive: positive, '1': positive}); matching is case-insensitive.",
        factory=dict,
    )
    annotator_field: str | None = doc(
        "Column holding the annotator's id, when several people labelled the same "
        "texts (Label Studio exports carry it as completed_by). None: the file is "
        "one annotator.",
        None,
    )
    provenance: Literal["human", "feedback"] = doc(
        "Where these labels come from: 'human' or 'feedback' (users' corrections).", "human"
    )
    strict: bool = doc(
        "A bad row (unknown label, empty text, missing label) stops the run with an error naming "
        "the file and row; false: the row goes to rejects.jsonl with its reason.",
        True,
    )


class WeakLabelConfig(Section):
    """Semi-automatic labels: labelling functions and the champion's pre-labels, combined."""

    KEY = "annotate.weak"
    vader: bool = doc("Vote with the VADER sentiment lexicon (needs label names 'negative' and 'positive').", False)
    vader_threshold: float = doc("VADER votes when |compound score| >= this, else abstains.", 0.05)
    keywords: dict = doc(
        "Label name -> words; a text containing one of them (whole word, any case) gets a vote for that label.",
        factory=dict,
    )
    regexes: dict = doc("Label name -> regular expressions; a match is a vote for that label.", factory=dict)
    champion: bool = doc("Vote with the current champion model's predictions (skipped when there is none).", True)
    champion_min_confidence: float = doc("The champion abstains below this probability.", 0.0, ge=0, le=1)
    combine: Literal["label_model", "weighted_vote"] = doc(
        "'label_model' (Dawid-Skene over the votes, anchored on human labels) or 'weighted_vote' (log-odds of "
        "each source's accuracy on human labels).",
        "label_model",
    )
    min_confidence: float = doc("Keep a weak label only at or above this combined probability.", 0.6, ge=0, le=1)
    max_items: int | None = doc("Weak-label at most this many unlabelled texts (None: all).", None)


class ActiveConfig(Section):
    """The review queue: unlabelled texts the model is least sure about, for people to label."""

    KEY = "annotate.active"
    enabled: bool = doc("Write a review queue on every run.", True)
    k: int = doc("Texts per queue.", 100, ge=1)
    strategy: Literal["entropy", "margin", "random"] = doc(
        "'entropy' or 'margin' (uncertainty), or 'random'.", "entropy"
    )
    diversity: float = doc(
        "Weight of the diversity term: an item's uncertainty minus this times its highest "
        "word-overlap cosine to the items already queued (0: off).",
        0.0,
        ge=0,
    )
    format: Literal["jsonl", "csv", "label-studio"] = doc(
        "'jsonl', 'csv', or 'label-studio' (import JSON with the model's suggestion).", "jsonl"
    )
    pool_limit: int = doc("Score at most this many unlabelled texts (a hash-ordered, stable sample).", 5000, ge=1)
    queue_dir: str = doc("Where queues are published. Empty: <home>/annotation/queue.", "")
    returned_dir: str = doc(
        "Labelled queue files dropped here (CSV/TSV/JSONL or a Label Studio export) are "
        "read as human labels on the next run. Empty: <home>/annotation/returned.",
        "",
    )


AnnotationMode = Literal["human", "semi", "mixed"]
ANNOTATION_MODES: tuple[str, ...] = typing.get_args(AnnotationMode)


class AnnotateConfig(Section):
    KEY = "annotate"
    labels: list[LabelSource] = doc("Label files to import (classification).", factory=list)
    label_names: list[str] = doc("Names of the label ids, in order (e.g. [negative, positive]).", factory=list)
    entity_types: list[str] = doc(
        "`task: ner`: the entity types, in order (e.g. [PER, ORG, LOC, MISC]); tags are O, then B- and I- of "
        "each. Given, not learned from the data, so that tag ids stay the same from run to run and a span "
        "of another type is a reject (unknown_label) rather than a new class.",
        factory=list,
    )
    max_examples: int | None = doc("Keep at most this many labelled examples (stratified).", None)
    validation_fraction: float = doc("Share of labelled examples for validation.", 0.1, ge=0, lt=1)
    test_fraction: float = doc("Share of labelled examples for the test split.", 0.2, gt=0, lt=1)
    seed: int = doc("Seed of the stratified split.", 13)
    mode: AnnotationMode = doc(
        "'human': train on human labels only; 'semi': train on semi-automatic labels only; "
        "'mixed': human labels, and semi-automatic ones for corpus texts without a human "
        "label. Validation and test always hold human labels only.",
        "human",
    )
    aggregate: Literal["majority", "dawid_skene"] = doc(
        "Several votes for one text: 'majority' (a tie drops the text as conflicting) or 'dawid_skene' (weighs "
        "each annotator by their estimated confusion matrix).",
        "majority",
    )
    weak: WeakLabelConfig = doc("Semi-automatic labels (modes semi and mixed).", factory=WeakLabelConfig)
    active: ActiveConfig = doc("Active-learning review queue.", factory=ActiveConfig)

    @model_validator(mode="after")
    def _fractions(self) -> Any:
        found = []
        if self.validation_fraction + self.test_fraction >= 1:
            found.append(("test_fraction", "validation_fraction + test_fraction must be < 1"))
        # NER spans come with the collected records (collect.files[].format), not from label files.
        if not self.labels and not self.entity_types:
            found.append(("labels", "add at least one label file (task: ner: give entity_types instead)"))
        if len(set(self.entity_types)) != len(self.entity_types) or any(
            not t or t == "O" or t.startswith(("B-", "I-")) or any(c.isspace() for c in t) for t in self.entity_types
        ):
            found.append(("entity_types", "must be distinct type names without B-/I- and without spaces (not 'O')"))
        return problems(self, found)
