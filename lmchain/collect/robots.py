"""robots.txt per origin, parsed by protego, fetched once per crawl.

What an answer means follows RFC 9309: a 2xx is parsed; a 4xx (no robots.txt) allows all; a
5xx or an unreachable server disallows all, because the site could not tell us what it wants.

Redirects of robots.txt are followed only inside the crawl's scope (and the network policy).
RFC 9309 lets crawlers follow them across hosts; we do not, because that would request a URL
the crawl was never allowed to visit. A redirect out of scope is treated like an unreachable
robots.txt: disallow all. We chose politeness over availability: the rules the site meant are
somewhere we may not read, and "no robots.txt found" (allow all) would guess that it wants to be
crawled. To crawl such a site, put the redirect's target in ``allowed_domains``.
"""

from __future__ import annotations

import asyncio

from protego import Protego

from lmchain.collect.charset import decode
from lmchain.collect.fetch import Fetcher, Guard, HostGates
from lmchain.collect.urls import origin

ROBOTS_MAX_BYTES = 500_000  # RFC 9309 asks crawlers to read at least 500 KiB


class Rules:
    def __init__(self, parser: Protego | None, allow_all: bool, reason: str = ""):
        self.parser = parser
        self.allow_all = allow_all
        self.reason = reason  # why everything is disallowed, when it is

    def allowed(self, url: str, user_agent: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str) -> float | None:
        return self.parser.crawl_delay(user_agent) if self.parser is not None else None

    def sitemaps(self) -> list[str]:
        return list(self.parser.sitemaps) if self.parser is not None else []


class RobotsCache:
    def __init__(self, fetcher: Fetcher, gates: HostGates, user_agent: str, scope: Guard | None = None):
        self.fetcher = fetcher
        self.gates = gates
        self.user_agent = user_agent
        self.scope = scope  # (url) -> why a redirect hop is out of the crawl's scope, or None
        self._rules: dict[str, asyncio.Future[Rules]] = {}

    async def rules(self, url: str) -> Rules:
        key = origin(url)
        if key not in self._rules:  # the first caller fetches; concurrent callers await the same future
            self._rules[key] = asyncio.ensure_future(self._load(key))
        return await self._rules[key]

    async def check(self, url: str) -> str | None:
        """A failure reason when robots.txt forbids ``url``, else None."""
        rules = await self.rules(url)
        if rules.allowed(url, self.user_agent):
            return None
        return rules.reason or "robots_disallowed"

    async def _load(self, key: str) -> Rules:
        resp = await self.fetcher.get(
            f"{key}/robots.txt", guard=self.scope, content_types=["*/*"], max_bytes=ROBOTS_MAX_BYTES
        )
        if resp.redirects and resp.error.startswith("offsite"):
            return Rules(
                None,
                allow_all=False,
                reason=f"robots_redirect_offsite: {key}/robots.txt redirects to "
                f"{resp.url}, outside the crawl's scope (disallow all)",
            )
        if resp.status >= 500 or (resp.status == 0 and resp.error):
            return Rules(None, allow_all=False, reason=f"robots_unreachable: {resp.error or resp.status}")
        if resp.status >= 400 or resp.error or not 200 <= resp.status < 300:
            return Rules(None, allow_all=True)
        rules = Rules(Protego.parse(decode(resp.body, resp.headers.get("content-type", ""))[0]), allow_all=True)
        self.gates.set_crawl_delay(key, rules.crawl_delay(self.user_agent))
        return rules
