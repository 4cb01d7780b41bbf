"""The crawler against a real HTTP server on 127.0.0.1 that misbehaves in every way we know of.

Assertions come from the server's own request log (what was really requested, when) and from
the stage's output files (what was recorded, and why).
"""

from __future__ import annotations

import time

import pytest

from crawl_site import Site, page, prose, send
from lmchain.artifacts import read_jsonl
from lmchain.stages.collect import run
from lmchain.config import CollectConfig, CrawlConfig

CRAWL_DELAY = 0.05
LATIN = ("Le café de la gare était fermé. Les élèves ont préféré la crème brûlée à la pâtisserie. "
         "Où est passé l'été ? Déjà fini, hélas, à cause de la grève générale des employés.")


def slow(req, route, site):
    site._record(req, 200)
    time.sleep(2.0)  # longer than the crawl's timeout
    send(req, 200, route.body, "text/html")


def huge(req, route, site):
    """20 MB of HTML, streamed in 64 KB chunks, with no Content-Length: the crawler must cut it."""
    site._record(req, 200)
    try:
        req.send_response(200)
        req.send_header("Content-Type", "text/html")
        req.send_header("Connection", "close")
        req.end_headers()
        chunk = b"<p>" + b"x" * (64 * 1024 - 7) + b"</p>\n"
        for _ in range(20 * 1024 * 1024 // len(chunk)):
            req.wfile.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    req.close_connection = True


def busy_once(req, route, site):
    """429 with Retry-After: 1 the first time, the page afterwards."""
    if not site.hits(req.path):
        site._record(req, 429)
        send(req, 429, b"slow down", "text/plain", {"Retry-After": "1"})
    else:
        site._record(req, 200)
        send(req, 200, route.body, "text/html; charset=utf-8")


def redirect_to(target: str):
    def handler(req, route, site):
        site._record(req, 301)
        send(req, 301, b"", "text/plain", {"Location": target})
    return handler


@pytest.fixture
def hostile_site():
    with Site() as site:
        u = site.url
        site.add("/robots.txt", f"User-agent: *\nDisallow: /private/\nCrawl-delay: {CRAWL_DELAY}\n"
                                f"Sitemap: {u}/sitemap.xml\n", content_type="text/plain")
        site.add("/sitemap.xml", "<?xml version='1.0'?><urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>"
                                 f"<url><loc>{u}/only-in-sitemap.html</loc></url>"
                                 f"<url><loc>{u}/private/from-sitemap.html</loc></url></urlset>",
                 content_type="application/xml")
        links = ["/good.html", "/private/secret.html", "/moved", "/loop-a", "/chain-0", "/missing.html",
                 "/error.html", "/busy.html", "/slow.html", "/huge.html", "/image.png", "/data.json",
                 "/latin-meta.html", "/latin-nometa.html", "/wrong-charset.html", "/bogus-charset.html",
                 "/q?b=2&a=1#section", "/q?a=1&b=2", "/alias.html", "/copy.html", "/noindex.html",
                 "/nofollow.html", "http://elsewhere.invalid/x.html",
                 "mailto:someone@example.org"]
        site.add("/index.html", page("Home", *prose("the home page"), links=links))
        site.add("/good.html", page("Good", *prose("good things")))
        site.add("/only-in-sitemap.html", page("Sitemap only", *prose("sitemaps")))
        site.add("/private/secret.html", page("Secret", *prose("secrets")))
        site.add("/private/from-sitemap.html", page("Secret 2", *prose("secrets")))
        site.add("/moved", handler=redirect_to("/target.html"))
        site.add("/target.html", page("Target", *prose("redirect targets")))
        site.add("/loop-a", handler=redirect_to("/loop-b"))
        site.add("/loop-b", handler=redirect_to("/loop-a"))
        for i in range(10):
            site.add(f"/chain-{i}", handler=redirect_to(f"/chain-{i + 1}"))
        site.add("/error.html", "oops", status=500, content_type="text/plain", validators=False)
        site.add("/busy.html", page("Busy", *prose("patience")), handler=busy_once)
        site.add("/slow.html", page("Slow", *prose("waiting")), handler=slow)
        site.add("/huge.html", handler=huge)
        site.add("/image.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100, content_type="image/png")
        site.add("/data.json", '{"a": 1}', content_type="application/json")
        site.add("/latin-meta.html", page("Meta", LATIN, *prose("encodings"),
                                          head="<meta charset='windows-1252'>").encode("cp1252"),
                 content_type="text/html")
        site.add("/latin-nometa.html", page("No meta", LATIN, *prose("encodings")).encode("latin-1"),
                 content_type="text/html")
        site.add("/wrong-charset.html", page("Wrong", LATIN, *prose("encodings")).encode("latin-1"),
                 content_type="text/html; charset=utf-8")
        site.add("/bogus-charset.html", page("Bogus", LATIN, *prose("encodings")).encode("utf-8"),
                 content_type="text/html; charset=x-no-such-charset")
        site.add("/q?a=1&b=2", page("Query", *prose("query strings")))
        site.add("/alias.html", page("Alias", *prose("canonical pages"),
                                     head=f"<link rel='canonical' href='{u}/canonical.html'>"))
        site.add("/noindex.html", page("Hidden", *prose("privacy"), head="<meta name='robots' content='noindex'>"))
        site.add("/nofollow.html", page("Dead end", *prose("dead ends"), links=["/only-via-nofollow.html"],
                                        head="<meta name='robots' content='nofollow'>"))
        site.add("/only-via-nofollow.html", page("Unreached", *prose("nothing")))
        site.add("/copy.html", page("Copy", *prose("copies"), head="<link rel='canonical' href='/index.html'>"))
        yield site


def crawl_config(site: Site, **kw) -> CrawlConfig:
    # The site is on 127.0.0.1, which the crawler refuses unless told: opt in for that address only.
    opts = dict(seeds=[site.url + "/index.html"], max_pages=100, max_depth=2, timeout_s=0.5, retries=2,
                backoff_s=0.05, max_bytes=1_000_000, concurrency=8, per_host_concurrency=4,
                allow_networks=["127.0.0.1"])
    return CrawlConfig(**{**opts, **kw})


def test_polite_crawl_of_a_hostile_site(ctx, hostile_site, tmp_path):
    site, u = hostile_site, hostile_site.url
    m = run(CollectConfig(crawl=crawl_config(site, state_path=str(tmp_path / "state.sqlite"))), ctx)

    # robots.txt: nothing under /private/ was requested, from links or from the sitemap.
    assert not [p for p in site.paths() if p.startswith("/private/")]
    # Crawl-delay: the requests' rate stays under one per delay. (Single gaps, seen by a server
    # thread that shares the GIL with the crawler, jitter by more than the delay itself.)
    starts = sorted(h.at for h in site.hits())
    assert starts[-1] - starts[0] >= (len(starts) - 1) * CRAWL_DELAY * 0.9

    records = {r["url"]: r for r in read_jsonl(m.outputs["records"])}
    rejects = {r["url"]: r["reason"] for r in read_jsonl(m.outputs["rejects"])}
    reason = {url: text.split(":")[0] for url, text in rejects.items()}
    assert reason == {
        f"{u}/private/secret.html": "robots_disallowed",
        f"{u}/private/from-sitemap.html": "robots_disallowed",
        f"{u}/loop-a": "redirect_loop",
        f"{u}/chain-0": "too_many_redirects",
        f"{u}/missing.html": "http_404",
        f"{u}/error.html": "http_500",
        f"{u}/slow.html": "timeout",
        f"{u}/huge.html": "too_large",
        f"{u}/image.png": "content_type",
        f"{u}/data.json": "content_type",
        f"{u}/copy.html": "duplicate",  # its canonical URL is the home page, fetched first
        f"{u}/noindex.html": "noindex",
    }
    assert set(records) == {f"{u}/{p}" for p in (
        "index.html", "good.html", "only-in-sitemap.html", "target.html", "busy.html", "latin-meta.html",
        "latin-nometa.html", "wrong-charset.html", "bogus-charset.html", "q?a=1&b=2", "canonical.html",
        "nofollow.html")}
    assert m.drop_reasons == {"robots_disallowed": 2, "redirect_loop": 1, "too_many_redirects": 1, "http_404": 1,
                              "http_500": 1, "timeout": 1, "too_large": 1, "content_type": 2, "duplicate": 1,
                              "noindex": 1}
    assert "/only-via-nofollow.html" not in site.paths()

    # Retries: the 500 was tried 1 + retries times; the 429 waited its Retry-After, then succeeded.
    assert len(site.hits("/error.html")) == 3 and len(site.hits("/slow.html")) == 3
    busy = site.hits("/busy.html")
    assert [h.status for h in busy] == [429, 200] and busy[1].at - busy[0].at >= 0.95
    # The same page under a reordered query and a fragment was requested once.
    assert site.paths().count("/q?a=1&b=2") == 1 and "/q?b=2&a=1" not in site.paths()
    assert records[f"{u}/q?a=1&b=2"]["depth"] == 1
    assert records[f"{u}/q?a=1&b=2"]["referrer"] == f"{u}/index.html"
    # A redirect's or a canonical page's document carries the URL it was reached by.
    assert records[f"{u}/target.html"]["fetched_url"] == f"{u}/moved"
    assert records[f"{u}/canonical.html"]["fetched_url"] == f"{u}/alias.html"
    assert "/canonical.html" not in site.paths()
    # Wrong, missing and unknown charsets still give the right text.
    for name in ("latin-meta", "latin-nometa", "wrong-charset", "bogus-charset"):
        assert "crème brûlée à la pâtisserie" in records[f"{u}/{name}.html"]["text"], name
    assert records[f"{u}/latin-meta.html"]["charset"].startswith("windows-1252")
    # Provenance fields of a page.
    good = records[f"{u}/good.html"]
    assert good["title"] == "Good" and good["language"] == "en" and good["status"] == 200
    assert good["etag"] and good["last_modified"] and len(good["html_sha256"]) == 64
    assert good["sha256"] == good["text_sha256"] and "paragraph 1 about good things" in good["text"]
    assert "Site footer" not in good["text"]  # boilerplate left out by the main-content extractor
    assert records[f"{u}/only-in-sitemap.html"]["referrer"] == f"{u}/sitemap.xml"
    assert m.info["crawl"]["sitemaps_read"] == 1 and m.info["crawl"]["statuses"]["200"] >= 10


def test_depth_and_page_budgets(ctx, tmp_path):
    with Site() as site:
        for i in range(6):  # a chain: /p0 -> /p1 -> ... -> /p5
            site.add(f"/p{i}.html", page(f"P{i}", *prose(f"page {i}"), links=[f"/p{i + 1}.html"]))
        m = run(CollectConfig(crawl=crawl_config(site, seeds=[site.url + "/p0.html"], max_depth=2, extract_workers=1,
                                                 state_path=str(tmp_path / "a.sqlite"))), ctx)
        assert sorted(r["url"].rsplit("/", 1)[1] for r in read_jsonl(m.outputs["records"])) == \
            ["p0.html", "p1.html", "p2.html"]
        m = run(CollectConfig(crawl=crawl_config(site, seeds=[site.url + "/p0.html"], max_depth=10, max_pages=4,
                                                 state_path=str(tmp_path / "b.sqlite"))), ctx)
        assert m.counts["crawl_docs"] == 4 and m.counts["crawl_queued_left"] == 1
        assert len([p for p in site.paths() if p.startswith("/p")]) == 3 + 4


def test_unreachable_robots_disallows_everything(ctx, tmp_path):
    with Site() as site:
        site.add("/robots.txt", "down", status=503, content_type="text/plain", validators=False)
        site.add("/index.html", page("Home", *prose("home")))
        m = run(CollectConfig(crawl=crawl_config(site, state_path=str(tmp_path / "s.sqlite"))), ctx)
        assert site.paths().count("/index.html") == 0
        assert [r["reason"].split(":")[0] for r in read_jsonl(m.outputs["rejects"])] == ["robots_unreachable"]
