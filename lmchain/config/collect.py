"""collect: local files and datasets, and a polite HTTP crawl."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, field_validator

from lmchain.config.base import Section, doc, model_validator, problems


class FileSource(Section):
    """A local file, folder or glob of text records, or a Hugging Face dataset."""

    KEY = "collect.files[]"
    path: str = doc(
        "File, folder (read recursively) or glob of txt, md, html, jsonl, csv, tsv or parquet "
        "files; a folder saved with datasets' save_to_disk; or `hf:NAME` for a hub dataset "
        "(online, needs the `datasets` package). `${SST2}` expands to the SST-2 folder, `${CONLL}` to CoNLL-2003's."
    )
    text_field: str = doc(
        "Column (csv/tsv/parquet/datasets) or key (jsonl) that holds the text; ignored for "
        "txt (one record per line), md and html (one record per file).",
        "text",
    )
    limit: int | None = doc("Read at most this many records from this source (None: all).", None)
    split: str = doc("Split of a dataset dict (saved to disk or on the hub).", "train")
    windowed: bool = doc(
        "Subject to collect.modified_after/before (off: always read in full, e.g. the accumulated feedback labels).",
        True,
    )
    format: Literal["auto", "conll", "spans", "label-studio"] = doc(
        "'auto': by extension, text only (as above). With `task: ner`, labelled text: 'conll' (one `token TAG` "
        "per line, BIO tags, a blank line between sentences; the tokens are joined by single spaces), 'spans' "
        "(JSONL: the text under text_field and `entities: [{start, end, label}]`, character offsets) or "
        "'label-studio' (an NER project's JSON export: each annotator's `labels` results kept). A bad row is a "
        "reject with its reason. A folder is searched for .conll/.iob/.bio/.txt/.tsv (conll), .jsonl/.json "
        "(spans) or .json (label-studio) files.",
        "auto",
    )


def _http_url(seed: str) -> str:
    if not seed.startswith(("http://", "https://")):
        raise ValueError(f"'{seed}' is not an http(s) URL; give e.g. https://example.org/")
    return seed


def _scope_rule(entry: str) -> str:
    from lmchain.collect.urls import scope_rule

    scope_rule(entry)
    return entry


def _network(entry: str) -> str:
    from lmchain.collect.netguard import parse_allow

    parse_allow(entry)
    return entry


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class CrawlConfig(Section):
    """A polite, incremental HTTP crawl (see lmchain/collect/crawler.py). ``cli`` names the flag of
    ``lmchain collect`` that sets a field (a switch sets the opposite of the default)."""

    KEY = "collect.crawl"
    seeds: list[Annotated[str, AfterValidator(_http_url)]] = doc(
        "Start URLs. Empty: no crawl.", factory=list, cli="--seed"
    )
    allowed_domains: list[Annotated[str, AfterValidator(_scope_rule)]] = doc(
        "Where the crawl may go: `host` (subdomains included, default http/https ports), `host:port` or "
        "`https://host[:port]`. Empty: exactly the seeds' origins (scheme + host + port).",
        factory=list,
        cli="--allowed-domain",
    )
    allow_private_networks: bool = doc(
        "Let the crawl connect to loopback, private, link-local, unique-local and "
        "CGNAT addresses (your own sites). Off: only public addresses, checked "
        "after DNS on every request and redirect. Cloud metadata addresses stay "
        "closed either way.",
        False,
        cli="--allow-private-networks",
    )
    allow_networks: list[Annotated[str, AfterValidator(_network)]] = doc(
        "Non-public CIDRs, addresses or host names the crawl may connect to, each with an optional port: "
        "10.0.0.0/8, 127.0.0.1:8080, [::1]:8080, wiki.intranet:8443. Narrower than allow_private_networks.",
        factory=list,
        cli="--allow-network",
    )
    max_pages: int = doc(
        "Fetch at most this many pages per crawl (robots.txt and sitemaps not counted).", 50, gt=0, cli="--max-pages"
    )
    max_depth: int = doc(
        "Follow links at most this many hops from a seed (0: the seeds only).", 3, ge=0, cli="--max-depth"
    )
    concurrency: int = doc("Requests in flight at once, over all hosts.", 16, gt=0, cli="--concurrency")
    per_host_concurrency: int = doc("Requests in flight at once to one host.", 2, gt=0)
    delay_s: float = doc(
        "Least time between the starts of two requests to one host; robots.txt Crawl-delay raises it.",
        0.0,
        ge=0,
        hint="seconds",
        cli="--delay",
    )
    max_crawl_delay_s: float = doc(
        "Cap on a robots.txt Crawl-delay (a huge one would stall the crawl).", 10.0, ge=0, hint="seconds"
    )
    timeout_s: float = doc(
        "Deadline of one request, body included, in seconds.", 10.0, gt=0, hint="seconds", cli="--timeout"
    )
    retries: int = doc("Retries after a timeout, a connection error, a 429 or a 5xx.", 2, ge=0)
    backoff_s: float = doc(
        "First retry waits this long, doubling on each retry (plus jitter).", 0.5, ge=0, hint="seconds"
    )
    max_retry_after_s: float = doc(
        "Honour Retry-After up to this many seconds; longer ones fail the page.", 60.0, ge=0, hint="seconds"
    )
    max_redirects: int = doc("Follow at most this many redirects per page; loops are detected.", 5, ge=0)
    max_bytes: int = doc("Abort a response body larger than this (bytes).", 5_000_000, gt=0)
    content_types: list[str] = doc(
        "Media types kept; others are recorded as failures without reading the body.",
        factory=lambda: ["text/html", "application/xhtml+xml", "text/plain"],
        min_length=1,
        hint="list at least one media type",
    )
    respect_robots: bool = doc("Obey robots.txt (Disallow, Crawl-delay).", True, cli="--ignore-robots")
    sitemaps: bool = doc(
        "Read the sitemaps named in robots.txt and /sitemap.xml of each seed host.", True, cli="--no-sitemaps"
    )
    user_agent: Annotated[str, AfterValidator(_not_blank)] = doc(
        "User-Agent header, also the name matched in robots.txt.", "lmchain-crawler/0.2", cli="--user-agent"
    )
    keep_html: bool = doc("Keep the raw HTML in each record (field `html`).", False, cli="--keep-html")
    incremental: bool = doc(
        "Send conditional requests and emit only new or changed pages, using the state "
        "store; false: fetch and emit everything.",
        True,
        cli="--full",
    )
    state_path: str = doc(
        "SQLite crawl state (validators, hashes, frontier). Empty: <home>/crawl/<hash of the seeds>.sqlite.",
        "",
        cli="--state",
    )
    extract_workers: int = doc(
        "Processes that turn HTML into text (0: one thread of the crawler's own process).",
        0,
        ge=0,
        cli="--extract-workers",
    )
    progress_every_s: float = doc(
        "Log a progress line (fetched, queued, failed, pages/s) this often.", 10.0, gt=0, hint="seconds"
    )


class CollectConfig(Section):
    KEY = "collect"
    files: list[FileSource] = doc("Local files, folders and datasets to read.", factory=list)
    crawl: CrawlConfig = doc("HTTP crawl.", factory=CrawlConfig)
    modified_after: str | None = doc(
        "Read only files modified after this ISO time (exclusive). Scheduled "
        "runs set it to their data interval's start: each night collects what "
        "arrived since the last run.",
        None,
    )
    modified_before: str | None = doc(
        "...and at or before this ISO time (the data interval's end), so a "
        "rerun of the same interval reads the same files.",
        None,
    )

    @field_validator("modified_after", "modified_before")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"'{value}' is not an ISO date-time (e.g. 2026-11-30T02:00:00+00:00)") from None
        return value

    @model_validator(mode="after")
    def _has_a_source(self) -> Any:
        return problems(
            self,
            [("", "no source configured; add collect.files or collect.crawl.seeds")]
            if not (self.files or self.crawl.seeds)
            else [],
        )
