"""What the service refuses before any route runs, and per-caller rate limits.

* :class:`HostAllowMiddleware`: a Host header that names no allowed host gets 400. A page on
  another site that resolves its own name to 127.0.0.1 (DNS rebinding) then cannot talk to
  the service from a browser; IP-address Host headers pass, since rebinding needs a name.
* :class:`BodyGuardMiddleware`: a body over ``max_bytes`` gets 413 as soon as the count is
  passed (from Content-Length, or while reading a chunked body), and a JSON body is checked
  strictly before FastAPI sees it: invalid UTF-8, NaN/Infinity literals and lone surrogates
  (which Python's json accepts, and which later fail to encode) get 400 that says what was
  wrong; syntax errors get 422. Both are pure ASGI (no BaseHTTPMiddleware): cheap per request.
* :class:`ShedMiddleware`: 503 for /v1/predict while the queue is full, without parsing the body.
* :class:`RateLimiter`: a token bucket per caller (API key, or client address when open).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import threading
import time
from collections import OrderedDict
from email.message import Message
from typing import Any

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# \uD800-\uDFFF escapes: the only way a lone surrogate gets into strictly decoded UTF-8 JSON.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


async def send_json(send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


# --------------------------------------------------------------------------- Host allow-list


def host_of(header: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class HostAllowMiddleware:
    def __init__(self, app, allowed: list[str]):
        self.app = app
        patterns = [h.strip().lower().rstrip(".") for h in allowed]
        self.any = "*" in patterns
        self.exact = {p for p in patterns if not p.startswith("*")}
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))

    def allows(self, host: str) -> bool:
        return self.any or host in self.exact or _is_ip(host) or (bool(self.suffixes) and host.endswith(self.suffixes))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = host_of(_header(scope, b"host") or "")
        if self.allows(host):
            return await self.app(scope, receive, send)
        await send_json(
            send,
            400,
            {
                "detail": "this Host header is not one the service answers to; add the name "
                "to deploy.service.allowed_hosts"
            },
        )


# --------------------------------------------------------------------------- body size and strict JSON


class BodyRejected(Exception):
    def __init__(self, status: int, detail: Any):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _reject_constant(name: str):
    raise BodyRejected(400, f"{name} is not valid JSON (RFC 8259 has no NaN or Infinity); send a number or null")


def _check_strings(value: Any) -> None:
    """Raise on a lone surrogate anywhere in a parsed document (iterative: depth costs no stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BodyRejected(
                    400,
                    "the body holds a lone UTF-16 surrogate escape (like \\ud800) that "
                    "encodes no character; send valid Unicode text",
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_json(body: bytes) -> None:
    """Raise :class:`BodyRejected` unless ``body`` is strict JSON (RFC 8259) in UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRejected(400, f"the body is not valid UTF-8 (byte {exc.start}); send JSON encoded as UTF-8") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BodyRejected(
            422,
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", exc.pos],
                    "msg": f"JSON decode error: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                }
            ],
        ) from None
    except RecursionError:
        raise BodyRejected(400, "the JSON body is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(doc)


def is_json_request(scope) -> bool:
    """FastAPI's own rule: no Content-Type, or application/json or application/*+json."""
    value = _header(scope, b"content-type")
    if not value:
        return True
    message = Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class BodyGuardMiddleware:
    """Reads the body (up to ``max_bytes``), checks it, then replays it to the app."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> BodyRejected:
        return BodyRejected(
            413,
            f"request body over the limit of {self.max_bytes} bytes "
            "(deploy.service.max_body_bytes); send fewer or shorter texts",
        )

    async def _read(self, scope, receive) -> bytes | None:
        """The whole body, or None when the client left while sending it."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise self._too_large()  # refused before a byte of it is read
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        try:
            body = await self._read(scope, receive)
            if body is None:
                return
            if body and is_json_request(scope):
                check_json(body)
        except BodyRejected as exc:
            # Connection: close, since the rest of an over-long body is never read.
            headers = {"connection": "close"} if exc.status == 413 else None
            return await send_json(send, exc.status, {"detail": exc.detail}, headers)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards: http.disconnect when the client goes away

        await self.app(scope, replay, send)


# --------------------------------------------------------------------------- load shedding


class ShedMiddleware:
    """503 for ``path`` while ``is_full()``, before the body is parsed: under a flood, refusing
    must cost far less than serving, or refusals eat the CPU the model needs. The body is read
    and dropped (not parsed), so the connection stays usable for the client's retry."""

    def __init__(self, app, path: str, is_full, max_bytes: int, on_shed=None):
        self.app, self.path, self.is_full, self.on_shed, self.max_bytes = app, path, is_full, on_shed, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path or not self.is_full():
            return await self.app(scope, receive, send)
        size = 0
        while size <= self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
            size += len(message.get("body", b""))
        if self.on_shed:
            self.on_shed()
        headers = {"retry-after": "1", **({"connection": "close"} if size > self.max_bytes else {})}
        await send_json(
            send, 503, {"detail": "the service is at capacity; retry after the Retry-After seconds"}, headers
        )


# --------------------------------------------------------------------------- rate limits


class RateLimiter:
    """A token bucket per caller: ``rate`` requests/s sustained, ``burst`` at once.

    Buckets live in an LRU of ``max_callers`` entries, so callers that rotate addresses cost
    bounded memory (an evicted caller starts again with a full bucket).
    """

    def __init__(self, rate: float, burst: int, max_callers: int = 50_000):
        self.rate, self.burst, self.max_callers = rate, float(burst), max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()  # predict runs on the event loop, feedback in the thread pool

    def retry_after(self, caller: str) -> float:
        """0 when the request may go ahead (and its token is taken), else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.pop(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[caller] = (tokens - 1 if wait == 0 else tokens, now)
            if len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        return wait


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
