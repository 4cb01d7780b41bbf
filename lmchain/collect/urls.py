"""URL normalisation and scope: one spelling per page, so the crawl fetches each page once.

``http://Host:80/a/./b?z=1&a=2#top`` and ``http://host/a/b?a=2&z=1`` are the same page; both
normalise to the second. Query parameters are sorted (their order never selects a different
page on the sites we crawl) and the fragment is dropped (it never reaches the server).

Scope is scheme + host + port. Without ``allowed_domains`` the crawl stays on its seeds'
origins exactly: a page on ``http://h:8001`` that links to ``http://h:8002`` or ``https://h``
leads out of scope. An ``allowed_domains`` entry names a host (subdomains included) on the
default port of http and https (``example.org``), a port (``example.org:8080``), or a scheme too
(``https://example.org``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
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
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
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


@dataclass(frozen=True)
class ScopeRule:
    scheme: str | None  # None: http or https
    host: str
    port: int | None  # None: the default port of the URL's scheme
    subdomains: bool

    def matches(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
        if scheme not in _DEFAULT_PORTS or (self.scheme and scheme != self.scheme):
            return False
        if (port or _DEFAULT_PORTS[scheme]) != (self.port or _DEFAULT_PORTS[scheme]):
            return False
        return host == self.host or (self.subdomains and host.endswith("." + self.host))


def scope_rule(entry: str, subdomains: bool = True) -> ScopeRule:
    """An ``allowed_domains`` entry (``host``, ``host:port``, ``scheme://host[:port]``) or a seed's origin."""
    entry = entry.strip()
    parts = urlsplit(entry if "://" in entry else "//" + entry)
    port = parts.port  # raises ValueError on a bad port
    scheme = parts.scheme.lower() or None
    if not parts.hostname or (scheme and scheme not in _DEFAULT_PORTS) or parts.path not in ("", "/"):
        raise ValueError(f"'{entry}' is not a host, host:port or http(s)://host[:port]")
    if scheme and port == _DEFAULT_PORTS[scheme]:
        port = None
    return ScopeRule(scheme, parts.hostname.lower().rstrip("."), port, subdomains)


class Scope:
    """The origins a crawl may visit: its seeds' (exactly) or ``allowed_domains``."""

    def __init__(self, seeds: list[str], allowed_domains: Sequence[str] = ()):
        if allowed_domains:
            self.rules = [scope_rule(d) for d in allowed_domains]
        else:
            self.rules = list(dict.fromkeys(scope_rule(origin(s), subdomains=False) for s in seeds))

    def __contains__(self, url: str) -> bool:
        return any(rule.matches(url) for rule in self.rules)


def in_domains(url: str, domains: list[str]) -> bool:
    """True when the URL is on one of ``domains`` (allowed_domains entries; subdomains included,
    and the port must match)."""
    return url in Scope([], domains) if domains else False


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
