"""A small same-host HTTP crawler: robots.txt, a page budget, politeness delay, HTML to text.

This is the foundation's crawler; the collection issue replaces it with an async, incremental
one. It keeps the same record shape, so downstream stages do not change.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
from collections import deque
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Iterator

_SKIP = {"script", "style", "noscript", "template", "svg", "head"}
_BLOCK = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "table",
          "section", "article", "dt", "dd", "blockquote", "title"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str, list[str]]:
    """(title, text, links) of an HTML page; paragraphs become lines."""
    parser = _TextExtractor()
    parser.feed(html)
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    return parser.title.strip(), "\n".join(line for line in lines if line), parser.links


@dataclass
class Fetched:
    url: str
    status: int
    text: str = ""
    title: str = ""
    error: str = ""


def _same_host(url: str, host: str) -> bool:
    return urllib.parse.urlsplit(url).netloc == host


def crawl(seeds: list[str], max_pages: int, timeout_s: float, delay_s: float, user_agent: str) -> Iterator[Fetched]:
    """Breadth-first crawl from ``seeds``, staying on each seed's host."""
    queue = deque(urllib.parse.urldefrag(s)[0] for s in seeds)
    seen = set(queue)
    robots: dict[str, urllib.robotparser.RobotFileParser] = {}
    fetched = 0
    while queue and fetched < max_pages:
        url = queue.popleft()
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc
        if host not in robots:
            rp = urllib.robotparser.RobotFileParser(f"{parts.scheme}://{host}/robots.txt")
            try:
                rp.read()
            except (urllib.error.URLError, OSError):
                rp.allow_all = True
            robots[host] = rp
        if not robots[host].can_fetch(user_agent, url):
            yield Fetched(url, 0, error="robots_disallowed")
            continue
        if fetched and delay_s:
            time.sleep(delay_s)
        fetched += 1
        req = urllib.request.Request(url, headers={"User-Agent": user_agent})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                ctype = resp.headers.get("Content-Type", "")
                if "html" not in ctype and "text/plain" not in ctype:
                    yield Fetched(url, resp.status, error=f"content_type: {ctype}")
                    continue
                charset = resp.headers.get_content_charset() or "utf-8"
                body = resp.read().decode(charset, errors="replace")
                final_url = resp.geturl()
                status = resp.status
        except urllib.error.HTTPError as exc:
            yield Fetched(url, exc.code, error=f"http_{exc.code}")
            continue
        except (urllib.error.URLError, OSError) as exc:
            yield Fetched(url, 0, error=f"fetch_error: {getattr(exc, 'reason', exc)}")
            continue
        if "html" in ctype:
            title, text, links = html_to_text(body)
        else:
            title, text, links = "", body, []
        yield Fetched(final_url, status, text=text, title=title)
        for href in links:
            link = urllib.parse.urldefrag(urllib.parse.urljoin(final_url, href))[0]
            if link.startswith(("http://", "https://")) and _same_host(link, host) and link not in seen:
                seen.add(link)
                queue.append(link)
