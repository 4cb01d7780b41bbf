"""The crawl: a breadth-first frontier worked by async tasks, every page committed to the store.

    seeds + sitemaps -> frontier -> [scope, network policy, robots.txt] -> fetch (gates, retries, redirects)
        -> decode -> extract (text, links, canonical) -> commit (outcome + validators + new links)

Concurrency comes from ``concurrency`` tasks sharing one httpx client; politeness from the host
gates in ``fetch``. Text extraction is CPU-bound and runs off the event loop (a thread, or
``extract_workers`` processes) so that fetching goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lmchain.artifacts import now_iso, sha256_text
from lmchain.collect import sitemap
from lmchain.collect.charset import decode
from lmchain.collect.extract import Extracted, extract
from lmchain.collect.fetch import Fetcher, HostGates, Response, pinned_client
from lmchain.collect.netguard import NetGuard
from lmchain.collect.robots import RobotsCache
from lmchain.collect.state import DOC, DUPLICATE, FAILED, SKIPPED, UNCHANGED, CrawlStore, QueuedUrl
from lmchain.collect.urls import Scope, normalize, origin
from lmchain.config import CrawlConfig

log = logging.getLogger("lmchain.collect")
HTML_TYPES = {"text/html", "application/xhtml+xml"}


@dataclass
class CrawlStats:
    crawl_id: int = 0
    state: str = ""  # "new", "resumed" or "finished" (nothing to do: the output is rewritten)
    fetched: int = 0  # pages requested in this process (a resumed crawl counts from the resume)
    docs: int = 0
    failed: int = 0
    seconds: float = 0.0
    sitemaps_read: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def pages_per_s(self) -> float:
        return self.fetched / self.seconds if self.seconds else 0.0


class Frontier:
    """Breadth-first queue (by depth, then discovery order) with the page budget."""

    def __init__(self, budget_left: int):
        self.heap: list[tuple[int, int, QueuedUrl]] = []
        self.seq = 0
        self.seen: set[str] = set()
        self.done: set[str] = set()
        self.budget_left = budget_left
        self.in_flight = 0
        self.changed = asyncio.Condition()

    def push(self, items: list[QueuedUrl]) -> None:
        for item in items:
            self.seen.add(item.url)
            self.seq += 1
            heapq.heappush(self.heap, (item.depth, self.seq, item))

    async def get(self) -> QueuedUrl | None:
        """The next URL to process, or None when the crawl is over for this worker."""
        async with self.changed:
            while True:
                if self.budget_left <= 0:
                    return None
                while self.heap and self.heap[0][2].url in self.done:
                    heapq.heappop(self.heap)  # settled meanwhile (a redirect or canonical claimed it)
                if self.heap:
                    self.budget_left -= 1
                    self.in_flight += 1
                    return heapq.heappop(self.heap)[2]
                if self.in_flight == 0:
                    self.changed.notify_all()
                    return None
                await self.changed.wait()

    def refund(self) -> None:
        """The URL was not requested after all (robots.txt): it does not use the page budget."""
        self.budget_left += 1

    async def task_done(self) -> None:
        async with self.changed:
            self.in_flight -= 1
            self.changed.notify_all()


class Crawler:
    def __init__(self, cfg: CrawlConfig, store: CrawlStore, crawl_id: int):
        self.cfg = cfg
        self.store = store
        self.crawl_id = crawl_id
        self.scope = Scope(self.seeds, cfg.allowed_domains)
        self.net = NetGuard(cfg.allow_private_networks, cfg.allow_networks)
        self.stats = CrawlStats(crawl_id)

    @property
    def seeds(self) -> list[str]:
        return [u for u in (normalize(s) for s in self.cfg.seeds) if u]

    # ------------------------------------------------------------------ run

    async def run(self, state: str) -> CrawlStats:
        cfg = self.cfg
        self.stats.state = state
        t0 = time.monotonic()
        self.gates = HostGates(cfg)
        executor = _executor(cfg.extract_workers)
        client, self.backend = pinned_client(cfg, self.net)
        async with client:
            self.fetcher = Fetcher(cfg, client, self.gates, self.net)
            self.robots = RobotsCache(self.fetcher, self.gates, cfg.user_agent, scope=self._out_of_scope)
            self.executor = executor
            self.frontier = Frontier(cfg.max_pages - self.store.fetched_count(self.crawl_id))
            self.frontier.seen, self.frontier.done = self.store.seen(self.crawl_id)
            if state == "new":
                self.frontier.push(self.store.enqueue(self.crawl_id, [QueuedUrl(s, 0, None) for s in self.seeds]))
            else:
                self.frontier.push(self.store.pending(self.crawl_id))
            if cfg.sitemaps and cfg.max_depth >= 1 and not self.store.sitemaps_done(self.crawl_id):
                await self._read_sitemaps()
            progress = asyncio.create_task(self._progress(t0))
            try:
                await asyncio.gather(*(self._worker() for _ in range(cfg.concurrency)))
            finally:
                progress.cancel()
                executor.shutdown(wait=False, cancel_futures=True)
        self.stats.seconds = time.monotonic() - t0
        self._log_progress(t0, final=True)
        return self.stats

    async def _worker(self) -> None:
        while (item := await self.frontier.get()) is not None:
            try:
                await self._process(item)
            except Exception as exc:  # a bug or a page that breaks a parser: record it, crawl on
                log.exception("crawl: %s failed unexpectedly", item.url)
                if item.url not in self.frontier.done:
                    self._commit(
                        item,
                        FAILED,
                        f"internal_error: {type(exc).__name__}: {exc}"[:300],
                        {
                            "source": "web",
                            "url": item.url,
                            "depth": item.depth,
                            "referrer": item.referrer,
                            "fetched_at": now_iso(),
                            "status": 0,
                        },
                    )
            finally:
                await self.frontier.task_done()

    # ------------------------------------------------------------------ one page

    async def _out_of_scope(self, url: str) -> str | None:
        return None if url in self.scope else f"offsite: {url}"

    async def _guard(self, url: str) -> str | None:
        """Why ``url`` must not be requested (out of scope, a refused address, robots.txt), or None."""
        if url not in self.scope:
            return f"offsite: {url}"
        if (reason := await self.net.check(url)) is not None:
            return reason
        if self.cfg.respect_robots:
            return await self.robots.check(url)
        return None

    def _validators(self, url: str) -> dict[str, str]:
        stored = self.store.stored(url) if self.cfg.incremental else None
        headers = {}
        if stored and stored.etag:
            headers["If-None-Match"] = stored.etag
        if stored and stored.last_modified:
            headers["If-Modified-Since"] = stored.last_modified
        return headers

    async def _process(self, item: QueuedUrl) -> None:
        base = {"source": "web", "url": item.url, "depth": item.depth, "referrer": item.referrer}
        if (reason := await self._guard(item.url)) is not None:
            self.frontier.refund()
            self._commit(item, FAILED, reason, {**base, "fetched_at": now_iso(), "status": 0}, fetched=False)
            return
        resp = await self.fetcher.get(item.url, guard=self._guard, validators=self._validators)
        base.update(fetched_at=now_iso(), status=resp.status, attempts=resp.attempts)
        if resp.url != item.url:
            base["redirected_to"] = resp.url
        if resp.error:
            self._commit(item, FAILED, resp.error, base)
        elif resp.status == 304:
            self._not_modified(item, resp, base)
        else:
            await self._page(item, resp, base)

    def _not_modified(self, item: QueuedUrl, resp: Response, base: dict) -> None:
        stored = self.store.stored(resp.url)
        if stored is None:  # a 304 we did not ask for: nothing to reuse
            self._commit(item, FAILED, "http_304: not modified, but the page was never stored", base)
            return
        page = {
            "url": resp.url,
            "etag": resp.headers.get("etag") or stored.etag,
            "last_modified": resp.headers.get("last-modified") or stored.last_modified,
            "html_sha256": stored.html_sha256,
            "text_sha256": stored.text_sha256,
            "status": 304,
            "fetched_at": base["fetched_at"],
            "links": stored.links,
        }
        self._commit(item, UNCHANGED, "not_modified", base, page=page, links=stored.links, claimed=[resp.url])

    async def _page(self, item: QueuedUrl, resp: Response, base: dict) -> None:
        content_type = resp.headers.get("content-type", "")
        html, charset = decode(resp.body, content_type)
        if resp.media_type in HTML_TYPES or (not resp.media_type and html.lstrip()[:1] == "<"):
            loop = asyncio.get_running_loop()
            ex = await loop.run_in_executor(
                self.executor, extract, html, resp.url, resp.headers.get("content-language", "")
            )
        else:  # text/plain and the like: the body is the text
            ex = Extracted(text=html.strip(), extractor="plain")
        doc_url = resp.url
        canonical = normalize(ex.canonical) if ex.canonical else None
        if canonical and canonical != resp.url and canonical in self.scope:
            doc_url = canonical
        links = [] if ex.nofollow else self._in_scope(ex.links)
        text_sha = sha256_text(ex.text)
        stored = self.store.stored(resp.url) if self.cfg.incremental else None
        record = {
            **base,
            "url": doc_url,
            "fetched_url": item.url,
            "title": ex.title,
            "text": ex.text,
            "language": ex.language,
            "content_type": resp.media_type,
            "charset": charset,
            "etag": resp.headers.get("etag"),
            "last_modified": resp.headers.get("last-modified"),
            "html_sha256": _sha256_bytes(resp.body),
            "text_sha256": text_sha,
            "sha256": text_sha,
            "extractor": ex.extractor,
            "meta": {"title": ex.title},
        }
        if self.cfg.keep_html:
            record["html"] = html
        page = {
            "url": resp.url,
            "etag": record["etag"],
            "last_modified": record["last_modified"],
            "html_sha256": record["html_sha256"],
            "text_sha256": text_sha,
            "status": resp.status,
            "fetched_at": base["fetched_at"],
            "links": links,
        }
        claimed = [resp.url, doc_url]
        # Another page already settled this one (same redirect target or canonical URL), maybe
        # while this request was in flight.
        if doc_url in self.frontier.done or item.url in self.frontier.done:
            kind, reason = DUPLICATE, f"duplicate: {doc_url} was already processed in this crawl"
            record = {**base, "url": item.url, "duplicate_of": doc_url}
        elif ex.noindex:
            kind, reason = SKIPPED, "noindex: the page asks not to be indexed"
            record = {**base, "reason_detail": "meta robots noindex"}
        elif not ex.text.strip():
            kind, reason = FAILED, f"empty_text: no text in a {resp.media_type or 'untyped'} page"
        elif stored is not None and stored.text_sha256 == text_sha:
            kind, reason = UNCHANGED, "same_text"
            record = {**base, "text_sha256": text_sha}  # not emitted: keep the store small
        else:
            kind, reason = DOC, ""
        self._commit(item, kind, reason, record, page=page, links=links, claimed=claimed)

    def _in_scope(self, hrefs: list[str]) -> list[str]:
        out, seen = [], set()
        for href in hrefs:
            url = normalize(href)
            if url and url not in seen and url in self.scope:
                seen.add(url)
                out.append(url)
        return out

    def _commit(
        self,
        item: QueuedUrl,
        kind: str,
        reason: str,
        record: dict,
        *,
        fetched: bool = True,
        page: dict | None = None,
        links: Sequence[str] = (),
        claimed: Sequence[str] = (),
    ) -> None:
        if reason and kind != DOC:
            record = {**record, "reason": reason}
        claimed_all = list(dict.fromkeys([item.url, *claimed]))
        follow = []
        if item.depth < self.cfg.max_depth:
            follow = [QueuedUrl(u, item.depth + 1, item.url) for u in links if u not in self.frontier.seen]
        # No await from the duplicate check in _page to here: claims cannot interleave.
        new = self.store.commit_page(
            self.crawl_id,
            claimed=claimed_all,
            kind=kind,
            reason=reason,
            fetched=fetched,
            status=record.get("status", 0),
            record=record,
            page=page,
            links=follow,
        )
        self.frontier.done.update(claimed_all)
        self.frontier.seen.update(claimed_all)
        self.frontier.push(new)
        self.stats.fetched += int(fetched)
        self.stats.docs += kind == DOC
        self.stats.failed += kind == FAILED

    # ------------------------------------------------------------------ sitemaps and progress

    async def _read_sitemaps(self) -> None:
        wanted: list[tuple[str, bool]] = []
        for root in dict.fromkeys(origin(s) for s in self.seeds):
            if self.cfg.respect_robots:
                wanted += [(u, True) for u in (normalize(s) for s in (await self.robots.rules(root)).sitemaps()) if u]
            wanted.append((f"{root}/sitemap.xml", False))
        result = await sitemap.discover(self.fetcher, wanted, self._guard)
        self.stats.sitemaps_read = result.read
        items = [
            QueuedUrl(u, 1, src)
            for u, src in ((normalize(p), s) for p, s in result.urls)
            if u and u in self.scope and u not in self.frontier.seen
        ]
        failures = [
            {"source": "sitemap", "url": u, "reason": r, "fetched_at": now_iso(), "status": 0}
            for u, r in result.failures
        ]
        self.frontier.push(self.store.enqueue_from_sitemaps(self.crawl_id, items, failures))
        self.stats.failed += len(failures)

    async def _progress(self, t0: float) -> None:
        while True:
            await asyncio.sleep(self.cfg.progress_every_s)
            self._log_progress(t0)

    def _log_progress(self, t0: float, final: bool = False) -> None:
        elapsed = max(time.monotonic() - t0, 1e-9)
        log.info(
            "crawl%s: fetched=%d queued=%d failed=%d docs=%d pages/s=%.1f",
            " done" if final else "",
            self.stats.fetched,
            len(self.frontier.heap),
            self.stats.failed,
            self.stats.docs,
            self.stats.fetched / elapsed,
        )


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _executor(workers: int) -> concurrent.futures.Executor:
    if workers <= 0:
        return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lmchain-extract")
    # spawn, not fork: the parent runs an event loop and (inside Airflow) threads of its own.
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def crawl(cfg: CrawlConfig, store: CrawlStore, run_key: str | None) -> CrawlStats:
    """Run (or resume) one crawl to its end; its outcomes are in ``store`` under the returned id."""
    crawl_id, state = store.open_crawl(run_key, cfg.seeds, now_iso())
    if state == "finished":
        return CrawlStats(crawl_id, state)
    stats = asyncio.run(Crawler(cfg, store, crawl_id).run(state))
    store.finish_crawl(crawl_id, now_iso())
    return stats
