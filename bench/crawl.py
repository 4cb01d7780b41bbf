"""Crawl throughput: lmchain's crawler vs Scrapy on the same local site, same limits, same work.

The site is the Python documentation (Debian's python3.11-doc, /usr/share/doc/python3.11/html)
when installed, else a generated site of prose pages. It is served by a separate process on
127.0.0.1 (so neither crawler shares a GIL with the server).

Both crawlers do the same work per page: fetch, decode, HTML to text and links with
``lmchain.collect.extract.extract`` (lxml + trafilatura), follow in-site links breadth-first,
write JSONL. Same limits: page budget, depth, 16 requests in flight, retries 2, 10 s timeout,
5 MB size limit; politeness off for both (no delay; robots.txt read by both; no sitemaps).
Timing covers the crawl itself, not interpreter start-up or imports.

    .venv/bin/pip install -r bench/requirements.txt   # scrapy, bench-only
    .venv/bin/python bench/crawl.py                   # ends with: RESULT crawl ratio=... pages_s=... scrapy_pages_s=...
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path("/usr/share/doc/python3.11/html")
MAX_PAGES = int(os.environ.get("BENCH_CRAWL_PAGES", "400"))
MAX_DEPTH = 10
CONCURRENCY = 16
SEED = "index.html"


def generated_site(root: Path, n: int = 600) -> Path:
    words = ("crawler robots sitemap politeness delay charset extraction corpus provenance token model "
             "dataset pipeline airflow quality gate label train evaluate register deploy").split()
    for i in range(n):
        paras = "".join(f"<p>{' '.join(words[(i + j + k) % len(words)] for k in range(40))}.</p>" for j in range(8))
        links = "".join(f'<a href="page{(i * 7 + k) % n}.html">next {k}</a> ' for k in range(1, 6))
        (root / f"page{i}.html").write_text(
            f"<html lang='en'><head><title>Page {i}</title></head><body>"
            f"<nav>{links}</nav><article><h1>Page {i}</h1>{paras}</article></body></html>")
    (root / SEED).write_text("<html><body>" + "".join(f'<a href="page{i}.html">p{i}</a>' for i in range(20))
                             + "<p>" + "index " * 60 + "</p></body></html>")
    return root


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the site server did not start")


def run_lmchain(url: str, work: Path) -> tuple[int, float]:
    from lmchain.stages.collect import collect_to
    from lmchain.config import CollectConfig, CrawlConfig

    cfg = CrawlConfig(seeds=[f"{url}/{SEED}"], max_pages=MAX_PAGES, max_depth=MAX_DEPTH, concurrency=CONCURRENCY,
                      per_host_concurrency=CONCURRENCY, delay_s=0.0, retries=2, timeout_s=10.0, max_bytes=5_000_000,
                      sitemaps=False, respect_robots=True, state_path=str(work / "lmchain-state.sqlite"),
                      progress_every_s=30.0, allow_networks=["127.0.0.1"])  # the bench site is local
    m = collect_to(CollectConfig(crawl=cfg), work / "lmchain-out")
    crawl = m.info["crawl"]
    return crawl["fetched_this_process"], crawl["seconds"]


def run_scrapy(url: str, work: Path) -> tuple[int, float]:
    out = work / "scrapy-stats.json"
    subprocess.run([sys.executable, __file__, "--scrapy", url, str(work), str(out)], check=True)
    stats = json.loads(out.read_text())
    return stats["pages"], stats["seconds"]


def scrapy_main(url: str, work: str, stats_path: str) -> None:
    """Runs in its own process: Twisted's reactor cannot be restarted."""
    import scrapy
    from scrapy.crawler import CrawlerProcess

    from lmchain.collect.extract import extract

    class Docs(scrapy.Spider):
        name = "docs"
        allowed_domains = ["127.0.0.1"]
        start_urls = [f"{url}/{SEED}"]

        def parse(self, response):
            if not isinstance(response, scrapy.http.TextResponse):
                return
            ex = extract(response.text, response.url)
            yield {"url": response.url, "title": ex.title, "text": ex.text}
            for link in ex.links:
                yield response.follow(link, callback=self.parse)

    process = CrawlerProcess(settings={
        "LOG_LEVEL": "WARNING", "ROBOTSTXT_OBEY": True, "DOWNLOAD_DELAY": 0, "CONCURRENT_REQUESTS": CONCURRENCY,
        "CONCURRENT_REQUESTS_PER_DOMAIN": CONCURRENCY, "DEPTH_LIMIT": MAX_DEPTH, "CLOSESPIDER_PAGECOUNT": MAX_PAGES,
        "RETRY_TIMES": 2, "DOWNLOAD_TIMEOUT": 10, "DOWNLOAD_MAXSIZE": 5_000_000, "REDIRECT_MAX_TIMES": 5,
        "COOKIES_ENABLED": False, "TELNETCONSOLE_ENABLED": False, "AUTOTHROTTLE_ENABLED": False,
        "DEPTH_PRIORITY": 1,  # breadth-first, like lmchain
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        "FEEDS": {f"{work}/scrapy-out.jsonl": {"format": "jsonlines", "encoding": "utf8"}},
    })
    crawler = process.create_crawler(Docs)
    process.crawl(crawler)
    process.start()
    s = crawler.stats.get_stats()
    # Pages = responses for pages; robots.txt is one response too, excluded as on lmchain's side.
    pages = s.get("response_received_count", 0) - s.get("robotstxt/response_count", 0)
    Path(stats_path).write_text(json.dumps({"pages": pages,
                                            "seconds": (s["finish_time"] - s["start_time"]).total_seconds()}))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lmchain-bench-crawl-"))
    root = DOCS if (DOCS / SEED).is_file() else generated_site(Path(tempfile.mkdtemp(prefix="site-")))
    proc, url = serve(root)
    try:
        print(f"site: {root} at {url}; budget {MAX_PAGES} pages, depth {MAX_DEPTH}, {CONCURRENCY} in flight",
              flush=True)
        pages, seconds = run_lmchain(url, work)
        lm = pages / seconds
        print(f"lmchain: {pages} pages in {seconds:.1f}s = {lm:.1f} pages/s", flush=True)
        s_pages, s_seconds = run_scrapy(url, work)
        sc = s_pages / s_seconds
        print(f"scrapy:  {s_pages} pages in {s_seconds:.1f}s = {sc:.1f} pages/s", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"RESULT crawl ratio={lm / sc:.2f} pages_s={lm:.1f} scrapy_pages_s={sc:.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--scrapy":
        scrapy_main(*sys.argv[2:])
    else:
        main()
