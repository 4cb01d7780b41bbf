"""The crawler's pure parts: URL normalisation, charset decoding, sitemap parsing, robots rules."""

from __future__ import annotations

import gzip

import pytest

from lmchain.collect import sitemap
from lmchain.collect.charset import decode
from lmchain.collect.urls import in_domains, normalize
from lmchain.config import CollectConfig, CrawlConfig
from lmchain.errors import ConfigError


@pytest.mark.parametrize("raw, want", [
    ("HTTP://Example.ORG:80/a/./b/../c?z=1&a=2#frag", "http://example.org/a/c?a=2&z=1"),
    ("https://example.org", "https://example.org/"),
    ("https://example.org:8443/x/", "https://example.org:8443/x/"),
    ("http://example.org/%7Euser/a b", "http://example.org/~user/a%20b"),
    ("http://example.org/?b=&a=1&a=0", "http://example.org/?a=0&a=1&b="),
    ("mailto:x@example.org", None),
    ("ftp://example.org/file", None),
    ("http://example.org:notaport/", None),
])
def test_normalize(raw, want):
    assert normalize(raw) == want


def test_normalize_resolves_relative_links_and_scope():
    assert normalize("../img/../b.html?y=2&x=1#s", base="http://h.org/docs/a/page.html") == \
        "http://h.org/docs/b.html?x=1&y=2"
    assert in_domains("http://docs.h.org/x", ["h.org"]) and not in_domains("http://evilh.org/", ["h.org"])


@pytest.mark.parametrize("body, content_type, how", [
    ("naïve café".encode("utf-8"), "text/html; charset=UTF-8", "utf-8 (header)"),
    ("<meta charset='iso-8859-1'>naïve café".encode("latin-1"), "text/html", "iso-8859-1 (meta)"),
    ("naïve café".encode("utf-8"), "text/html; charset=nonsense", "utf-8 (default)"),
    (b"\xef\xbb\xbf" + "naïve café".encode("utf-8"), "text/html; charset=latin-1", "utf-8-sig (bom)"),
])
def test_decode_trusts_what_decodes(body, content_type, how):
    text, used = decode(body, content_type)
    assert "naïve café" in text and used == how


def test_sitemap_urlset_index_and_gzip():
    urlset = (b"<?xml version='1.0'?><urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>"
              b"<url><loc> http://h.org/a </loc></url><url><loc>http://h.org/b</loc></url></urlset>")
    index = (b"<sitemapindex xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>"
             b"<sitemap><loc>http://h.org/s1.xml.gz</loc></sitemap></sitemapindex>")
    assert sitemap.parse(urlset) == (["http://h.org/a", "http://h.org/b"], [])
    assert sitemap.parse(gzip.compress(urlset)) == (["http://h.org/a", "http://h.org/b"], [])
    assert sitemap.parse(index) == ([], ["http://h.org/s1.xml.gz"])


def test_crawl_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="collect.crawl.seeds.*not an http"):
        CrawlConfig(seeds=["example.org"])
    with pytest.raises(ConfigError, match="collect.crawl.per_host_concurrency"):
        CrawlConfig(per_host_concurrency=0)
    with pytest.raises(ConfigError, match="add collect.files or collect.crawl.seeds"):
        CollectConfig()
