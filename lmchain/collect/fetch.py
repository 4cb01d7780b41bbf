"""One page over HTTP, politely: host gates, retries with back-off, redirects, size and type limits.

Every request, retries and redirect hops included, passes its host's gate, which bounds the
requests in flight to that host and spaces their starts by the host's delay (the configured
delay or robots.txt's Crawl-delay, whichever is longer). A 429 or 503 with Retry-After pushes
the whole host back, not only the URL that got it.

Every hop is also checked against the network policy (``netguard``) before it is requested,
and the transport connects only to the addresses that check approved (:class:`PinnedBackend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import httpcore
import httpx

from lmchain.collect.netguard import NetGuard, Refused
from lmchain.collect.urls import host_of, normalize
from lmchain.config import CrawlConfig

REDIRECTS = {301, 302, 303, 307, 308}
RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class Response:
    url: str  # where the body came from, after redirects
    status: int = 0
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    error: str = ""  # failure reason; empty when the response is usable (2xx or 304)
    redirects: list[str] = field(default_factory=list)  # URLs passed through, first one included
    attempts: int = 0

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class HostGate:
    def __init__(self, concurrency: int, delay_s: float):
        self.slots = asyncio.Semaphore(concurrency)
        self.delay_s = delay_s
        self.next_start = 0.0
        self.last_start = float("-inf")

    @contextlib.asynccontextmanager
    async def slot(self):
        async with self.slots:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.delay_s
            self.last_start = start
            if start > now:
                await asyncio.sleep(start - now)
            yield

    def set_delay(self, delay_s: float) -> None:
        self.delay_s = delay_s
        # robots.txt itself went out before we knew the delay: space the next request from it too.
        self.next_start = max(self.next_start, self.last_start + delay_s)

    def defer(self, seconds: float) -> None:
        self.next_start = max(self.next_start, time.monotonic() + seconds)


class HostGates:
    def __init__(self, cfg: CrawlConfig):
        self.cfg = cfg
        self.gates: dict[str, HostGate] = {}

    def __getitem__(self, url: str) -> HostGate:
        host = host_of(url)
        if host not in self.gates:
            self.gates[host] = HostGate(self.cfg.per_host_concurrency, self.cfg.delay_s)
        return self.gates[host]

    def set_crawl_delay(self, url: str, crawl_delay: float | None) -> None:
        if crawl_delay:
            self[url].set_delay(max(self.cfg.delay_s, min(crawl_delay, self.cfg.max_crawl_delay_s)))


# (url) -> a failure reason when the URL must not be requested (robots.txt, scope), else None
Guard = Callable[[str], Awaitable[str | None]]
# (url) -> conditional request headers for that URL
Validators = Callable[[str], dict[str, str]]


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to the addresses the NetGuard checked for the host.

    httpcore hands us the URL's host name; we never resolve it ourselves here: the guard's cached,
    checked lookup gives the addresses, so DNS cannot answer differently between check and
    connect. TLS still verifies the certificate against the host name (httpcore's SNI).
    """

    def __init__(self, guard: NetGuard):
        self.guard = guard
        self.inner = httpcore.AnyIOBackend()
        self.connections = 0  # TCP connections attempted (for the crawl's own accounting)

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options=None
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.guard.addresses(host, port)
        except Refused as exc:
            raise httpcore.ConnectError(str(exc)) from None
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            try:
                self.connections += 1
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise httpcore.ConnectError("the crawler does not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def pinned_client(cfg: CrawlConfig, guard: NetGuard) -> tuple[httpx.AsyncClient, PinnedBackend]:
    """The crawl's HTTP client: connections through :class:`PinnedBackend`, no proxies from the
    environment (a proxy would be the address checked, not the site)."""
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    backend = PinnedBackend(guard)
    # httpx 0.28 takes no network backend: replace its pool by the same pool built around ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    client = httpx.AsyncClient(
        headers={"User-Agent": cfg.user_agent},
        transport=transport,
        trust_env=False,
        timeout=httpx.Timeout(cfg.timeout_s),
        follow_redirects=False,
    )
    return client, backend


class Fetcher:
    def __init__(self, cfg: CrawlConfig, client: httpx.AsyncClient, gates: HostGates, net: NetGuard):
        self.cfg = cfg
        self.client = client
        self.gates = gates
        self.net = net

    async def get(
        self,
        url: str,
        *,
        guard: Guard | None = None,
        validators: Validators | None = None,
        content_types: list[str] | None = None,
        max_bytes: int | None = None,
    ) -> Response:
        """Fetch ``url`` following redirects; the response's ``error`` says why it failed."""
        chain = [url]
        attempts = 0
        while True:
            current = chain[-1]
            # Every hop, the first included: robots.txt and sitemaps have no other guard.
            if (reason := await self.net.check(current)) is not None:
                return Response(current, error=reason, redirects=chain[:-1], attempts=attempts)
            if guard is not None and len(chain) > 1 and (reason := await guard(current)):
                return Response(current, error=reason, redirects=chain[:-1], attempts=attempts)
            headers = validators(current) if validators else {}
            resp = await self._with_retries(
                current, headers, content_types or self.cfg.content_types, max_bytes or self.cfg.max_bytes
            )
            attempts += resp.attempts
            resp.attempts = attempts
            resp.redirects = chain[:-1]
            if resp.status not in REDIRECTS or resp.error:
                return resp
            target = normalize(resp.headers.get("location", ""), base=current)
            if target is None:
                resp.error = f"bad_redirect: {resp.headers.get('location', '')[:200]!r}"
                return resp
            if target in chain:
                resp.error = f"redirect_loop: {' -> '.join(chain + [target])}"[:500]
                return resp
            if len(chain) > self.cfg.max_redirects:
                resp.error = f"too_many_redirects: more than {self.cfg.max_redirects}"
                return resp
            chain.append(target)

    async def _with_retries(
        self, url: str, headers: dict[str, str], content_types: list[str], max_bytes: int
    ) -> Response:
        gate = self.gates[url]
        for attempt in range(self.cfg.retries + 1):
            async with gate.slot():
                resp = await self._once(url, headers, content_types, max_bytes)
            resp.attempts = attempt + 1
            retryable = resp.error.startswith(("timeout", "connection_error")) or (
                not resp.error and resp.status in RETRYABLE
            )
            if not retryable:
                if not resp.error and resp.status >= 400:
                    resp.error = f"http_{resp.status}"
                return resp
            if not resp.error:
                resp.error = f"http_{resp.status}"
            if attempt == self.cfg.retries:
                return resp
            wait = self.cfg.backoff_s * 2**attempt * (1 + 0.25 * random.random())
            retry_after = _retry_after_s(resp.headers.get("retry-after"))
            if retry_after is not None:
                if retry_after > self.cfg.max_retry_after_s:
                    resp.error = f"retry_after_too_long: {retry_after:.0f}s > {self.cfg.max_retry_after_s:.0f}s"
                    return resp
                gate.defer(retry_after)  # the whole host asked for a pause, not only this URL
                wait = max(wait, retry_after)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _once(self, url: str, headers: dict[str, str], content_types: list[str], max_bytes: int) -> Response:
        try:
            # One deadline for the whole exchange: httpx's timeouts are per read, and a server
            # that trickles a byte a second would never trip them.
            async with asyncio.timeout(self.cfg.timeout_s):
                async with self.client.stream("GET", url, headers=headers) as r:
                    resp = Response(url, r.status_code, r.headers)
                    if r.status_code >= 300:
                        return resp  # no body needed: redirects, not-modified and errors
                    if (reason := _type_error(resp, content_types)) is not None:
                        resp.error = reason
                        return resp
                    length = r.headers.get("content-length", "")
                    if length.isdigit() and int(length) > max_bytes:
                        resp.error = f"too_large: Content-Length {length} > {max_bytes} bytes"
                        return resp
                    body = bytearray()
                    async for chunk in r.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            resp.error = f"too_large: body over {max_bytes} bytes"
                            return resp  # leaving the block closes the connection mid-body
                    resp.body = bytes(body)
                    if not resp.media_type and b"\0" in resp.body[:1024]:
                        resp.error = "content_type: missing, and the body is binary"
                    return resp
        except TimeoutError:
            return Response(url, error=f"timeout: no complete response within {self.cfg.timeout_s:g}s")
        except httpx.TimeoutException:
            return Response(url, error=f"timeout: no complete response within {self.cfg.timeout_s:g}s")
        except httpx.ConnectError as exc:
            if str(exc).startswith(("blocked_address", "dns_error")):  # the transport's own check: final
                return Response(url, error=str(exc)[:500])
            return Response(url, error=f"connection_error: {type(exc).__name__}: {exc}"[:300])
        except (httpx.TransportError, OSError) as exc:
            return Response(url, error=f"connection_error: {type(exc).__name__}: {exc}"[:300])
        except httpx.HTTPError as exc:
            return Response(url, error=f"http_error: {type(exc).__name__}: {exc}"[:300])


def _type_error(resp: Response, content_types: list[str]) -> str | None:
    media = resp.media_type
    # A missing Content-Type is judged from the body (binary or not) once it is read.
    if not media or "*/*" in content_types:
        return None
    if media in content_types or any(t.endswith("/*") and media.startswith(t[:-1]) for t in content_types):
        return None
    return f"content_type: {media}"


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
