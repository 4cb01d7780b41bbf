"""A real HTTP server on 127.0.0.1 for crawler tests, with a log of every request it received.

Routes map a path (query included, as the client sent it) to a ``Route``: a static body with
validators (ETag, Last-Modified, honoured with 304s), or a handler function for the odd cases
(redirects, slow pages, 20 MB bodies, 429 then 200). Pages can be changed between crawls.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Callable


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    validators: bool = True  # send ETag + Last-Modified and answer conditional requests with 304
    handler: Callable | None = None  # handler(req, route) -> None writes the whole response itself
    modified: float = field(default_factory=lambda: time.time() - 3600)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


@dataclass
class Hit:
    path: str
    at: float
    status: int
    headers: dict[str, str]


class Site:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.log: list[Hit] = []
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet; the Site keeps its own log
                pass

            def do_GET(self):
                site._serve(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Site":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, path: str, body: str | bytes = b"", **kw) -> Route:
        route = Route(body.encode() if isinstance(body, str) else body, **kw)
        self.routes[path] = route
        return route

    def change(self, path: str, body: str) -> None:
        route = self.routes[path]
        route.body = body.encode()
        route.modified = time.time()

    def hits(self, path: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.log if path is None or h.path == path]

    def paths(self) -> list[str]:
        return [h.path for h in self.hits()]

    def _record(self, req, status: int) -> None:
        with self.lock:
            self.log.append(Hit(req.path, time.monotonic(), status, dict(req.headers)))

    def _serve(self, req) -> None:
        route = self.routes.get(req.path)
        if route is None:
            self._record(req, 404)
            send(req, 404, b"not found", "text/plain")
            return
        if route.handler is not None:
            route.handler(req, route, self)
            return
        headers = dict(route.headers)
        if route.validators:
            headers["ETag"] = route.etag
            headers["Last-Modified"] = formatdate(route.modified, usegmt=True)
            if req.headers.get("If-None-Match") == route.etag:
                self._record(req, 304)
                send(req, 304, b"", None, headers)
                return
        self._record(req, route.status)
        send(req, route.status, route.body, route.content_type, headers)


def send(req, status: int, body: bytes, content_type: str | None, headers: dict[str, str] | None = None) -> None:
    try:
        req.send_response(status)
        if content_type:
            req.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        if status != 304:
            req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if status != 304:
            req.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the crawler hung up (size limit, timeout): that is what some tests want


def page(title: str, *paragraphs: str, links: list[str] = (), head: str = "") -> str:
    """An HTML page with enough prose for a main-content extractor to find."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return (f"<!doctype html><html lang='en'><head><title>{title}</title>{head}</head><body>"
            f"<nav><ul>{anchors}</ul></nav><main><article><h1>{title}</h1>{body}</article></main>"
            "<footer>Site footer</footer></body></html>")


def prose(topic: str, n: int = 3) -> list[str]:
    return [f"This is paragraph {i} about {topic}. It has several sentences so that extraction keeps it. "
            f"The {topic} section explains one more detail number {i} in plain words for readers."
            for i in range(n)]
