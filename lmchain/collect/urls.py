"""URL normalisation and scope: one spelling per page, so the crawl fetches each page once.

``http://Host:80/a/./b?z=1&a=2#top`` and ``http://host/a/b?a=2&z=1`` are the same page; both
normalise to the second. Query parameters are sorted (their order never selects a different
page on the sites we crawl) and the fragment is dropped (it never reaches the server).
"""

from __future__ import annotations

import posixpath
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left unescaped in a path: RFC 3986 unreserved plus sub-delims, ':', '@' and '/'.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def normalize(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of ``url`` (resolved against ``base``), or None if it is not http(s)."""
    url = url.strip()
    if base is not None:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad port or an unbalanced IPv6 bracket
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = _normalize_path(parts.path)
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)), doseq=True)
    return urlunsplit((scheme, host, path, query, ""))


def _normalize_path(path: str) -> str:
    if not path:
        return "/"
    trailing = path.endswith("/")
    path = posixpath.normpath(path)
    if path.startswith("//"):  # normpath keeps a leading '//' (POSIX allows it); URLs do not need it
        path = "/" + path.lstrip("/")
    if trailing and not path.endswith("/"):
        path += "/"
    # Decode then re-encode: %7E and ~ are one page; a literal space becomes %20.
    return quote(unquote(path), safe=_PATH_SAFE)


def host_of(url: str) -> str:
    """``host[:port]`` of a normalised URL: the unit of politeness."""
    return urlsplit(url).netloc


def hostname_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def in_domains(url: str, domains: list[str]) -> bool:
    """True when the URL's host is one of ``domains`` or a subdomain of one."""
    host = hostname_of(url)
    return any(host == d or host.endswith("." + d) for d in domains)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
