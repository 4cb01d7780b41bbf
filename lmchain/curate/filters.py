"""Heuristic quality filters for web documents: Gopher repetition and quality, C4, FineWeb.

Each filter keeps the published defaults (MassiveText/Gopher table A1, C4, FineWeb) and decides
like datatrove's implementation of the same name, check for check and in the same order, so a
corpus filtered here and there keeps the same documents. Words and sentences are counted with
:mod:`lmchain.curate.tokens` (spaCy's English rules, as datatrove uses). What differs is speed:
n-gram statistics run on integer ids with numpy instead of on joined strings.

A filter is called with a record and returns ``None`` (keep) or ``"<filter>:<check>"``. Its
thresholds are its config section (:mod:`lmchain.config.curate`), which holds the published
defaults; ``GopherQuality(max_doc_words=60)`` changes one, validated like a recipe key.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

import numpy as np

from lmchain.config import C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig, Section, replace
from lmchain.curate.tokens import PUNCTUATION_SET, TERMINAL_PUNCTUATION, count_sentences, words


@lru_cache(maxsize=4)
def _words(text: str) -> list[str]:
    # Gopher repetition, Gopher quality and FineWeb look at the same text one after another.
    return words(text)


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in them), counting every copy after the first."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: n-gram keys as a polynomial in word ids


def _ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    keys = ids[: len(ids) - n + 1].copy()
    for k in range(1, n):
        keys = keys * _MULT + ids[k : len(ids) - n + 1 + k]
    return keys


def _window_sums(lengths: np.ndarray, n: int) -> np.ndarray:
    csum = np.concatenate(([0], np.cumsum(lengths)))
    return csum[n:] - csum[:-n]


def top_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters of the most frequent word n-gram (joined by spaces) times its count; among equally
    frequent n-grams the one seen first, as ``Counter.most_common(1)`` picks it."""
    keys = _ngram_keys(ids, n)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    top = counts.max()
    first_top = first[counts == top].min()
    return int((_window_sums(lengths, n)[first_top] + n - 1) * top)


def repeated_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters in word n-grams that repeat an earlier one, scanning left to right and jumping
    over a repeat (datatrove's ``find_all_duplicate``; the n-gram counts without spaces)."""
    keys = _ngram_keys(ids, n).tolist()
    sums = _window_sums(lengths, n).tolist()
    seen: set[int] = set()
    repeated = idx = 0
    while idx < len(keys):
        key = keys[idx]
        if key in seen:
            repeated += sums[idx]
            idx += n
        else:
            seen.add(key)
            idx += 1
    return repeated


class Filter:
    """A filter over one config section: thresholds are read as attributes of the filter
    (``self.min_doc_words``), from ``config`` with ``changes`` applied."""

    name = ""
    section: type[Section] = Section

    def __init__(self, config: Section | None = None, **changes: Any) -> None:
        config = config if config is not None else self.section()
        self.config = replace(config, **changes) if changes else config

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "config":  # unpickling asks before config is set
            raise AttributeError(key)
        return getattr(self.config, key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class GopherRepetition(Filter):
    """Repetition removal of Gopher (Rae et al. 2021, table A1)."""

    name = "gopher_repetition"
    section = GopherRepetitionConfig

    config: GopherRepetitionConfig

    def __init__(self, config: GopherRepetitionConfig | None = None, **changes: Any) -> None:
        super().__init__(config, **changes)
        # [[n, fraction], ...] from YAML: n as an int, for slicing and the reason's name.
        self.top_n_grams = [(int(n), f) for n, f in self.config.top_n_grams]
        self.dup_n_grams = [(int(n), f) for n, f in self.config.dup_n_grams]

    def __call__(self, rec: dict) -> str | None:
        reason = self.check(rec["text"])
        return f"{self.name}:{reason}" if reason else None

    def check(self, text: str) -> str | None:
        if not text:
            return "empty"
        paragraphs = re.split(r"\n{2,}", text.strip())
        dup, chars = find_duplicates(paragraphs)
        if self.dup_para_frac and dup / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if self.dup_para_char_frac and chars / len(text) > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = re.split(r"\n+", text)
        dup, chars = find_duplicates(lines)
        if self.dup_line_frac and dup / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if self.dup_line_char_frac and chars / len(text) > self.dup_line_char_frac:
            return "dup_line_char_frac"
        toks = _words(text)
        vocab: dict[str, int] = {}
        ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in toks), dtype=np.uint64, count=len(toks))
        lengths = np.fromiter((len(w) for w in toks), dtype=np.int64, count=len(toks))
        for n, frac in self.top_n_grams:
            if len(toks) >= n and top_ngram_chars(ids, lengths, n) / len(text) > frac:
                return f"top_{n}_gram"
        for n, frac in self.dup_n_grams:
            if len(toks) >= n and repeated_ngram_chars(ids, lengths, n) / len(text) > frac:
                return f"duplicated_{n}_n_grams"
        return None


STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQuality(Filter):
    """Quality filters of Gopher (Rae et al. 2021): length, word length, symbols, bullets,
    ellipses, alphabetic words, stop words."""

    name = "gopher_quality"
    section = GopherQualityConfig
    stop_words = STOP_WORDS

    def __call__(self, rec: dict) -> str | None:
        reason = self.check(rec["text"])
        return f"{self.name}:{reason}" if reason else None

    def check(self, text: str) -> str | None:
        toks = _words(text)
        n_words = len(toks)
        non_symbol = [w for w in toks if not PUNCTUATION_SET.issuperset(w)]
        if self.min_doc_words and len(non_symbol) < self.min_doc_words:
            return "short_doc"
        if self.max_doc_words and len(non_symbol) > self.max_doc_words:
            return "long_doc"
        if non_symbol:  # datatrove's np.mean of nothing is nan, which fails no comparison
            avg = sum(map(len, non_symbol)) / len(non_symbol)
            if self.min_avg_word_length and avg < self.min_avg_word_length:
                return "below_avg_threshold"
            if self.max_avg_word_length and avg > self.max_avg_word_length:
                return "above_avg_threshold"
        if not n_words:
            return "no_words"
        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return "too_many_hashes"
        if self.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return "too_many_ellipsis"
        lines = text.splitlines()
        if (
            lines
            and self.max_bullet_lines_ratio
            and sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > self.max_bullet_lines_ratio
        ):
            return "too_many_bullets"
        if (
            lines
            and self.max_ellipsis_lines_ratio
            and sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > self.max_ellipsis_lines_ratio
        ):
            return "too_many_end_ellipsis"
        if (
            self.max_non_alpha_words_ratio
            and sum(any(c.isalpha() for c in w) for w in toks) / n_words < self.max_non_alpha_words_ratio
        ):
            return "below_alpha_threshold"
        if self.min_stop_words and len(set(self.stop_words).intersection(toks)) < self.min_stop_words:
            return "enough_stop_words"
        return None


_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCTUATION = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Quality(Filter):
    """C4's line and document rules (Raffel et al. 2020): drops lines without terminal punctuation
    (optional), with under 3 words, with a 1000+ character word, mentioning javascript or a
    cookie/terms policy; drops documents with lorem ipsum, a curly bracket or under 5 sentences.
    Kept documents keep only their kept lines."""

    name = "c4"
    section = C4Config

    def __init__(self, config: C4Config | None = None, **changes: Any) -> None:
        super().__init__(config, **changes)
        self.line_drops: Counter = Counter()

    def __call__(self, rec: dict) -> str | None:
        reason, text = self.check(rec["text"])
        if reason:
            return f"{self.name}:{reason}"
        rec["text"] = text
        return None

    def check(self, text: str) -> tuple[str | None, str]:
        sentences = 0
        kept: list[str] = []
        for line in text.splitlines():
            line = line.strip()
            line_words = line.split()
            if self.max_word_length != -1 and any(len(w) > self.max_word_length for w in line_words):
                self.line_drops["too_long_word"] += 1
                continue
            if self.remove_citations:
                line = _CITATION.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(_END_PUNCTUATION) or line.endswith("...")):
                self.line_drops["no_terminal_punct"] += 1
                continue
            if len(line_words) < self.min_words_per_line:
                self.line_drops["too_few_words"] += 1
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return "lorem_ipsum", text
            if self.filter_javascript and "javascript" in lower:
                self.line_drops["javascript"] += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return "curly_bracket", text
            if self.filter_policy and any(p in lower for p in _POLICY):
                self.line_drops["policy"] += 1
                continue
            if sentences < self.min_num_sentences:  # only the threshold matters: stop counting there
                sentences += count_sentences(line)
            kept.append(line)
        if sentences < self.min_num_sentences:
            return "too_few_sentences", text
        return None, "\n".join(kept).strip()


class FineWebQuality(Filter):
    """FineWeb's own filters (Penedo et al. 2024): share of lines ending in punctuation, share of
    short lines, characters in duplicated lines, newlines per word."""

    name = "fineweb"
    section = FineWebConfig

    def __call__(self, rec: dict) -> str | None:
        reason = self.check(rec["text"])
        return f"{self.name}:{reason}" if reason else None

    def check(self, text: str) -> str | None:
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if not lines:
            return "empty"
        ratio = sum(1 for line in lines if line.endswith(TERMINAL_PUNCTUATION)) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return "line_punct_ratio"
        if sum(1 for line in lines if len(line) <= self.short_line_length) / len(lines) > self.short_line_thr:
            return "short_line_ratio"
        if find_duplicates(lines)[1] / len(text.replace("\n", "")) > self.char_duplicates_ratio:
            return "char_dup_ratio"
        n_words = len(_words(text))
        if not n_words or text.count("\n") / n_words > self.new_line_ratio:
            return "list_ratio"
        return None
