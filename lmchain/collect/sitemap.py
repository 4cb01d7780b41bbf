"""sitemap.xml: page URLs a site lists itself, including pages no link reaches.

Reads ``<urlset>`` and ``<sitemapindex>`` documents (plain or gzipped), following an index
one level deep and at most ``MAX_SITEMAPS`` files per crawl, so a huge or cyclic index cannot
take the crawl over.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field

from lxml import etree

from lmchain.collect.fetch import Fetcher

MAX_SITEMAPS = 20
MAX_SITEMAP_BYTES = 50_000_000  # the sitemaps.org limit (uncompressed)
SITEMAP_TYPES = [
    "application/xml",
    "text/xml",
    "application/gzip",
    "application/x-gzip",
    "text/plain",
    "application/octet-stream",
]


@dataclass
class SitemapResult:
    urls: list[tuple[str, str]] = field(default_factory=list)  # (page URL, sitemap it came from)
    read: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (sitemap URL, reason)


def parse(body: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) of one sitemap document."""
    if body[:2] == b"\x1f\x8b":
        body = gzip.GzipFile(fileobj=io.BytesIO(body)).read(MAX_SITEMAP_BYTES)
    root = etree.fromstring(body, parser=etree.XMLParser(recover=True, resolve_entities=False, no_network=True))
    if root is None:
        return [], []
    locs = [(el.getparent(), (el.text or "").strip()) for el in root.iter("{*}loc")]
    pages = [loc for parent, loc in locs if loc and etree.QName(parent).localname == "url"]
    nested = [loc for parent, loc in locs if loc and etree.QName(parent).localname == "sitemap"]
    return pages, nested


async def discover(fetcher: Fetcher, sitemap_urls: list[tuple[str, bool]], guard) -> SitemapResult:
    """Read the given sitemaps; ``(url, named)``: named ones (robots.txt) count as failures when absent."""
    out = SitemapResult()
    queue = list(sitemap_urls)
    seen: set[str] = set()
    while queue and out.read < MAX_SITEMAPS:
        url, named = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        if (reason := await guard(url)) is not None:
            if named:
                out.failures.append((url, reason))
            continue
        resp = await fetcher.get(url, guard=guard, content_types=SITEMAP_TYPES, max_bytes=MAX_SITEMAP_BYTES)
        if resp.error or resp.status != 200:
            if named:
                out.failures.append((url, resp.error or f"http_{resp.status}"))
            continue
        try:
            pages, nested = parse(resp.body)
        except (OSError, EOFError, zlib.error, etree.XMLSyntaxError) as exc:
            out.failures.append((url, f"bad_sitemap: {exc}"[:300]))
            continue
        out.read += 1
        out.urls.extend((page, url) for page in pages)
        queue.extend((n, True) for n in nested)
    return out
