"""Train/validation/test splits fixed by a hash of each normalised text, and the leakage check."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Any, Mapping, Sequence, TypeVar, cast

from lmchain.config import AnnotateConfig
from lmchain.errors import InputError
from lmchain.records import Example, NerExample
from lmchain.text import normalise_for_dedup

SPLITS = ("train", "validation", "test")


# A classification example or, for task: ner, a text with its spans: split alike, by the text alone.
E = TypeVar("E", Example, NerExample)


def _stratum(ex: Mapping[str, Any]) -> int:
    """What ``max_examples`` subsamples in proportion: the label; NER examples form one stratum."""
    return int(cast(dict, ex).get("label", 0))


class LeakageError(InputError):
    """The same normalised text sits in two splits."""


def unit(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by the text alone: the same on every run, whatever else is in the data."""
    return int(hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()[:13], 16) / 16**13


def split_key(text: str) -> str:
    """Texts that are the same sentence up to case and punctuation share a key, hence a split."""
    return normalise_for_dedup(text)


def split_of(text: str, cfg: AnnotateConfig) -> str:
    u = unit(split_key(text), f"split{cfg.seed}")
    return (
        "test"
        if u < cfg.test_fraction
        else "validation"
        if u < cfg.test_fraction + cfg.validation_fraction
        else "train"
    )


def stratified_split(examples: Sequence[E], cfg: AnnotateConfig) -> dict[str, list[E]]:
    """Split by a hash of each sentence, so a sentence keeps its split in every run.

    The split depends on the text alone, not on the rest of the data, so when feedback, a
    nightly collection or returned review labels add examples, nothing the champion trained on
    moves into the test split its challenger is scored on. (A shuffled quota re-deals every
    split when the data changes: the feedback-loop bench saw the champion "win" on sentences it
    had trained on.) Class shares hold in expectation rather than exactly; ``max_examples``
    subsamples each label in proportion, by another hash, so the choice is stable too.
    """
    rng = random.Random(cfg.seed)
    groups: dict[str, list[E]] = defaultdict(list)
    for ex in sorted(examples, key=lambda e: e["id"]):
        groups[split_key(ex["text"])].append(ex)
    keys = sorted(groups)
    if cfg.max_examples is not None and len(examples) > cfg.max_examples:
        share = cfg.max_examples / len(examples)
        by_label: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            by_label[_stratum(groups[key][0])].append(key)
        keys = sorted(
            k
            for label_keys in by_label.values()
            for k in sorted(label_keys, key=lambda k: unit(k, f"sample{cfg.seed}"))[
                : max(1, round(len(label_keys) * share))
            ]
        )
    splits: dict[str, list[E]] = {s: [] for s in SPLITS}
    for key in keys:
        splits[split_of(groups[key][0]["text"], cfg)] += groups[key]
    for items in splits.values():
        rng.shuffle(items)  # training order; membership is fixed above
    return splits


def check_leakage(splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Raise when a normalised text sits in two splits (a model would be scored on its training data)."""
    where: dict[str, str] = {}
    for split, items in splits.items():
        for ex in items:
            key = split_key(ex["text"])
            other = where.setdefault(key, split)
            if other != split:
                raise LeakageError(
                    f"annotate: leakage: the text {ex['text'][:120]!r} (id {ex.get('id')}) is in "
                    f"both '{other}' and '{split}'; a text's split must follow from its "
                    "normalised text alone (lmchain.annotate.splits.split_of)"
                )
