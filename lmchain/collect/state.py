"""The crawl state store (SQLite): what makes a crawl incremental and resumable.

Tables:

``pages``     one row per URL ever fetched: validators (ETag, Last-Modified), body and text
              hashes, last status and the in-scope links, kept across crawls. A re-crawl sends
              the validators; a 304 reuses the stored links, so the crawl goes on without bodies.
``crawls``    one row per crawl; ``finished_at`` is NULL while it runs or after it was killed.
``frontier``  the URLs one crawl has discovered; ``done`` once they are processed.
``outcomes``  what processing a URL produced in one crawl: a document, a failure with its
              reason, an unchanged page or a duplicate, with the full output record.

Several processes may share one store (runs at once on one home): SQLite's locks
serialise the transactions, and :func:`crawl_lock` lets only one process at a time work one run
key's crawl, so a second attempt of the same run waits and then reuses the finished crawl.

Each processed page is one transaction: its outcome, its frontier row marked done, its
validators and the links it discovered commit together. A crawl killed at any point (kill -9
included) resumes from the frontier rows not yet done, and the output files are written from
``outcomes`` at the end, so a kill can neither duplicate nor truncate a record.
"""

from __future__ import annotations

import math
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from lmchain.home import Home
from lmchain.records import Document

SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, html_sha256 TEXT, text_sha256 TEXT,
    status INTEGER, fetched_at TEXT, links TEXT);
CREATE TABLE IF NOT EXISTS crawls (
    id INTEGER PRIMARY KEY, run_key TEXT, seeds TEXT, started_at TEXT, finished_at TEXT,
    sitemaps_done INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS frontier (
    crawl INTEGER, url TEXT, depth INTEGER, referrer TEXT, done INTEGER DEFAULT 0, seq INTEGER,
    PRIMARY KEY (crawl, url));
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY, crawl INTEGER, url TEXT, kind TEXT, reason TEXT, fetched INTEGER,
    status INTEGER, record TEXT);
CREATE INDEX IF NOT EXISTS outcomes_by_crawl ON outcomes (crawl, kind);
"""

DOC, FAILED, UNCHANGED, DUPLICATE, SKIPPED = "doc", "failed", "unchanged", "duplicate", "skipped"


@dataclass
class Stored:
    """What the store knows about a URL from earlier crawls."""

    etag: str | None
    last_modified: str | None
    html_sha256: str | None
    text_sha256: str | None
    links: list[str]


@dataclass
class QueuedUrl:
    url: str
    depth: int
    referrer: str | None


class CrawlStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, one per processed page.
        # timeout: another run's transaction on the same store is waited for, not an error.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        # WAL + synchronous=NORMAL survives a killed process (not a power cut) at a fraction of
        # the cost of FULL; a lost last page after a power cut is merely fetched again.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM frontier").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ crawls

    def open_crawl(self, run_key: str | None, seeds: list[str], now: str) -> tuple[int, str]:
        """(crawl id, "new" | "resumed" | "finished").

        With a run key (an Airflow run id) the crawl of that key is resumed or, when finished,
        reused as is: a retried task gives the same output. Without one, the last unfinished
        crawl is resumed (the CLI after a kill), else a new crawl starts (a re-crawl).
        """
        if run_key is not None:
            row = self.db.execute(
                "SELECT id, finished_at FROM crawls WHERE run_key = ? ORDER BY id DESC LIMIT 1", (run_key,)
            ).fetchone()
        else:
            row = self.db.execute(
                "SELECT id, finished_at FROM crawls WHERE finished_at IS NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is not None:
            return row[0], "finished" if row[1] else "resumed"
        cur = self.db.execute(
            "INSERT INTO crawls (run_key, seeds, started_at) VALUES (?, ?, ?)", (run_key, json.dumps(seeds), now)
        )
        assert cur.lastrowid is not None  # set by every INSERT on a rowid table
        return cur.lastrowid, "new"

    def sitemaps_done(self, crawl: int) -> bool:
        return bool(self.db.execute("SELECT sitemaps_done FROM crawls WHERE id = ?", (crawl,)).fetchone()[0])

    def enqueue_from_sitemaps(
        self, crawl: int, items: Iterable[QueuedUrl], failures: list[dict[str, Any]]
    ) -> list[QueuedUrl]:
        """Add the sitemaps' URLs and failures and mark them read, together: a resumed crawl does
        not read them again (nor record their failures twice)."""
        with self._transaction():
            self.db.execute("UPDATE crawls SET sitemaps_done = 1 WHERE id = ?", (crawl,))
            for record in failures:
                self._insert_outcome(crawl, FAILED, record["reason"], False, record.get("status", 0), record)
            return self._enqueue(crawl, items)

    def _insert_outcome(
        self, crawl: int, kind: str, reason: str, fetched: bool, status: int, record: dict[str, Any]
    ) -> None:
        self.db.execute(
            "INSERT INTO outcomes (crawl, url, kind, reason, fetched, status, record) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (crawl, record["url"], kind, reason, int(fetched), status, json.dumps(record, ensure_ascii=False)),
        )

    def finish_crawl(self, crawl: int, now: str) -> None:
        self.db.execute("UPDATE crawls SET finished_at = ? WHERE id = ?", (now, crawl))

    # ------------------------------------------------------------------ frontier

    def enqueue(self, crawl: int, items: Iterable[QueuedUrl]) -> list[QueuedUrl]:
        """Add URLs not yet in this crawl's frontier; returns those that were new."""
        with self._transaction():
            return self._enqueue(crawl, items)

    def _enqueue(self, crawl: int, items: Iterable[QueuedUrl]) -> list[QueuedUrl]:
        added = []
        for item in items:
            self._seq += 1
            cur = self.db.execute(
                "INSERT OR IGNORE INTO frontier (crawl, url, depth, referrer, seq) VALUES (?, ?, ?, ?, ?)",
                (crawl, item.url, item.depth, item.referrer, self._seq),
            )
            if cur.rowcount:
                added.append(item)
        return added

    def pending(self, crawl: int) -> list[QueuedUrl]:
        rows = self.db.execute(
            "SELECT url, depth, referrer FROM frontier WHERE crawl = ? AND done = 0 ORDER BY depth, seq", (crawl,)
        )
        return [QueuedUrl(*row) for row in rows]

    def seen(self, crawl: int) -> tuple[set[str], set[str]]:
        """(every URL in this crawl's frontier, those already processed)."""
        seen, done = set(), set()
        for url, is_done in self.db.execute("SELECT url, done FROM frontier WHERE crawl = ?", (crawl,)):
            seen.add(url)
            if is_done:
                done.add(url)
        return seen, done

    def fetched_count(self, crawl: int) -> int:
        return self.db.execute("SELECT COALESCE(SUM(fetched), 0) FROM outcomes WHERE crawl = ?", (crawl,)).fetchone()[0]

    # ------------------------------------------------------------------ pages

    def stored(self, url: str) -> Stored | None:
        row = self.db.execute(
            "SELECT etag, last_modified, html_sha256, text_sha256, links FROM pages WHERE url = ?", (url,)
        ).fetchone()
        if row is None:
            return None
        return Stored(row[0], row[1], row[2], row[3], json.loads(row[4] or "[]"))

    def commit_page(
        self,
        crawl: int,
        *,
        claimed: list[str],
        kind: str,
        reason: str,
        fetched: bool,
        status: int,
        record: dict[str, Any],
        page: dict[str, Any] | None,
        links: list[QueuedUrl],
    ) -> list[QueuedUrl]:
        """Record one processed URL atomically; returns the links that are new to the frontier.

        ``claimed``: the URLs this outcome settles (the queued URL, plus the redirect target and
        the canonical URL when they differ), so none of them is fetched again in this crawl.
        """
        with self._transaction():
            for url in claimed:
                self._seq += 1
                self.db.execute(
                    "INSERT INTO frontier (crawl, url, depth, referrer, done, seq) "
                    "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (crawl, url) DO UPDATE SET done = 1",
                    (crawl, url, record.get("depth", 0), record.get("referrer"), self._seq),
                )
            self._insert_outcome(crawl, kind, reason, fetched, status, record)
            if page is not None:
                self.db.execute(
                    "INSERT INTO pages (url, etag, last_modified, html_sha256, text_sha256, status, fetched_at, links) "
                    "VALUES (:url, :etag, :last_modified, :html_sha256, :text_sha256, :status, :fetched_at, :links) "
                    "ON CONFLICT (url) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified, "
                    "html_sha256 = excluded.html_sha256, text_sha256 = excluded.text_sha256, "
                    "status = excluded.status, fetched_at = excluded.fetched_at, links = excluded.links",
                    {**page, "links": json.dumps(page.get("links", []))},
                )
            return self._enqueue(crawl, links)

    # ------------------------------------------------------------------ output

    def outcomes(self, crawl: int, kinds: tuple[str, ...]) -> Iterator[tuple[str, str, Document]]:
        """(kind, reason, record) of this crawl in the order they were committed."""
        marks = ",".join("?" * len(kinds))
        rows = self.db.execute(
            f"SELECT kind, reason, record FROM outcomes WHERE crawl = ? AND kind IN ({marks}) ORDER BY id",
            (crawl, *kinds),
        )
        for kind, reason, record in rows:
            yield kind, reason, json.loads(record)

    def summary(self, crawl: int) -> dict[str, Any]:
        """Counts per outcome kind, per failure reason and per HTTP status, for the manifest."""
        kinds = dict(self.db.execute("SELECT kind, COUNT(*) FROM outcomes WHERE crawl = ? GROUP BY kind", (crawl,)))
        reasons: dict[str, int] = {}
        for reason, n in self.db.execute(
            "SELECT reason, COUNT(*) FROM outcomes WHERE crawl = ? AND kind = ? GROUP BY reason", (crawl, FAILED)
        ):
            key = reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + n
        statuses = {
            str(s): n
            for s, n in self.db.execute(
                "SELECT status, COUNT(*) FROM outcomes WHERE crawl = ? AND fetched = 1 GROUP BY status", (crawl,)
            )
        }
        queued = self.db.execute("SELECT COUNT(*) FROM frontier WHERE crawl = ? AND done = 0", (crawl,)).fetchone()[0]
        return {"kinds": kinds, "reasons": reasons, "statuses": statuses, "queued_left": queued}

    def _transaction(self):
        return _Transaction(self.db)


def crawl_lock(path: str | Path, run_key: str | None):
    """Exclusive, per store and run key (None: the CLI's crawl), for the whole crawl, however long
    it takes; flock is released by the kernel when the process dies, so a killed crawl never
    leaves it held."""
    from lmchain.locking import file_lock

    path = Path(path)
    key = hashlib.sha256((run_key or "\0cli").encode()).hexdigest()[:16]
    return file_lock(path.with_name(f".{path.name}.{key}"), timeout=math.inf)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def state_path(crawl, home: Home) -> Path:
    """Where the state of a crawl (a CrawlConfig) lives: ``crawl.state_path``, else one store per
    set of seeds under the home, so a re-crawl finds its validators."""
    if crawl.state_path:
        return Path(crawl.state_path)
    key = hashlib.sha256("\n".join(sorted(crawl.seeds)).encode()).hexdigest()[:12]
    return home.crawl_state(key)
