"""HTML to text and links: trafilatura for the main content, lxml for links and page metadata.

``extract(html, url)`` is a plain function of picklable arguments so that the crawler can run
it in a process pool: it is the CPU-bound part of a crawl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import lxml.html
from lxml import etree

from lmchain.text import collapse_whitespace

_SPACE = re.compile(r"[ \t\r\f\v]+")
_NON_CONTENT = ("script", "style", "noscript", "template", "svg", "head")
# Permalink anchors next to headings ("¶" in Sphinx and MkDocs sites): markup, not text.
_PRUNE = ["//a[contains(concat(' ', normalize-space(@class), ' '), ' headerlink ')]"]
_BLOCKS = (
    "p",
    "div",
    "br",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "tr",
    "dt",
    "dd",
    "blockquote",
    "section",
    "article",
    "table",
    "ul",
    "ol",
)


@dataclass
class Extracted:
    title: str = ""
    text: str = ""
    language: str = ""  # a hint from <html lang>, Content-Language or <meta>; not a detection
    links: list[str] = field(default_factory=list)  # absolute hrefs, as written (not normalised)
    canonical: str = ""  # <link rel=canonical>, absolute
    noindex: bool = False  # <meta name=robots content=noindex>: do not keep the text
    nofollow: bool = False  # <meta name=robots content=nofollow>: do not follow the links
    extractor: str = ""  # "trafilatura" or "fallback" (trafilatura found no main content)


def parse(html: str) -> lxml.html.HtmlElement | None:
    try:
        # lxml refuses str input that carries an XML encoding declaration; bytes it accepts.
        return lxml.html.document_fromstring(html.encode("utf-8"), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except (etree.ParserError, ValueError):
        return None


def extract(html: str, url: str, content_language: str = "") -> Extracted:
    tree = parse(html)
    if tree is None:
        return Extracted(extractor="none")
    out = _page_metadata(tree, url, content_language)
    text, title = _main_text(tree, url)
    if text:
        out.extractor = "trafilatura"
    else:  # short or unusual pages: trafilatura finds no "main content", the whole body still counts
        text, out.extractor = _all_text(tree), "fallback"
    out.text = text
    out.title = title or out.title
    return out


def _page_metadata(tree, url: str, content_language: str) -> Extracted:
    out = Extracted()
    base = url
    for href in tree.xpath("//base/@href")[:1]:
        base = _join(url, href) or url
    out.title = collapse_whitespace(" ".join(tree.xpath("//title//text()")))
    out.language = (
        (tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang") or content_language or "")
        .split(",")[0]
        .strip()
        .lower()
    )
    for meta in tree.xpath("//meta[@name and @content]"):
        name, content = meta.get("name").lower(), meta.get("content").lower()
        if name in ("robots", "lmchain-crawler"):
            out.noindex |= "noindex" in content or "none" in content
            out.nofollow |= "nofollow" in content or "none" in content
    for meta in tree.xpath("//meta[@http-equiv and @content]"):
        if meta.get("http-equiv").lower() == "content-language" and not out.language:
            out.language = meta.get("content").split(",")[0].strip().lower()
    for link in tree.xpath("//link[@rel and @href]"):
        if "canonical" in link.get("rel").lower().split():
            out.canonical = _join(base, link.get("href")) or ""
            break
    for a in tree.xpath("//a[@href] | //area[@href]"):
        if "nofollow" in (a.get("rel") or "").lower().split():
            continue
        link = _join(base, a.get("href"))
        if link:
            out.links.append(link)
    return out


def _join(base: str, href: str) -> str | None:
    from urllib.parse import urljoin

    href = href.strip()
    if not href or href.startswith(("#", "javascript:", "mailto:", "tel:", "data:")):
        return None
    try:
        return urljoin(base, href)
    except ValueError:
        return None


def _main_text(tree, url: str) -> tuple[str, str]:
    import trafilatura

    # Metadata extraction (dates, authors) costs more than the text itself; we need the title only.
    doc = trafilatura.bare_extraction(
        tree,
        url=url,
        with_metadata=False,
        include_comments=False,
        include_tables=True,
        deduplicate=False,
        prune_xpath=_PRUNE,
    )
    if doc is None:
        return "", ""
    assert not isinstance(doc, dict)  # a dict only with as_dict=True; the default gives a Document
    return (doc.text or "").strip(), (doc.title or "").strip()


def _all_text(tree) -> str:
    body = tree.find("body")
    root = body if body is not None else tree
    for bad in root.xpath("|".join(f"//{t}" for t in _NON_CONTENT)):
        bad.drop_tree()
    for el in root.iter(*_BLOCKS):  # text_content() glues paragraphs together; keep them on lines
        el.tail = "\n" + (el.tail or "")
    text = root.text_content()
    lines = (_SPACE.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)
