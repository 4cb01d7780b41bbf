"""Airflow UI for lmchain: links to MLflow, the model service, Data Docs and evaluation reports.

The plugin mounts two small apps on the Airflow API server, so reports open from the Airflow
navigation and from the gate and evaluate tasks' extra links:

  /lmchain/data-docs/<page>                 the Great Expectations Data Docs site
  /lmchain/runs/<run>/evaluate/<file>       an evaluation report (report.html) and its figures

They serve those files and nothing else: run folders also hold collected records, curate's
rejects (unredacted text), labelled splits and model weights, and none of that is reachable
here. Every request must carry the Airflow session (the UI's ``_token`` cookie) or an
``Authorization: Bearer`` JWT from ``POST /auth/token``, and the auth manager must allow the
user to read task instances: 401 without a valid token, 403 for a user without that right.
Every response is sandboxed (``Content-Security-Policy: sandbox``): a page that holds text from
outside (Data Docs shows data values) cannot run script on the Airflow origin.

MLflow and the service run as their own processes (`lmchain up`); their URLs come from
LMCHAIN_MLFLOW_URL and LMCHAIN_SERVE_URL.
"""

import os
import re

from fastapi import Request

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk.bases.operatorlink import BaseOperatorLink

MLFLOW_URL = os.environ.get("LMCHAIN_MLFLOW_URL", "http://127.0.0.1:5000")
SERVE_URL = os.environ.get("LMCHAIN_SERVE_URL", "http://127.0.0.1:8000/docs")

# Sent with every answer, errors included. sandbox: no script, no same-origin access, even if
# a page holds markup from a crawled text; frame-ancestors: only the Airflow UI may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "sandbox; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# One path segment: no '..', no hidden files, no separators or encoded tricks. ':' and '+' are
# in Airflow's run ids (manual__2026-12-02T07:40:29.255933+00:00), which GX uses as folder names
# of its validation pages.
SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._:+-]{0,199}")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".otf": "font/otf",
    ".ttf": "font/ttf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
# The Data Docs site: pages, styles, images and fonts. Not its JSON or anything else GX may add.
DATA_DOCS_SUFFIXES = frozenset(MEDIA_TYPES)
# An evaluation report: the page and the figures written beside it.
REPORT_FILE = re.compile(r"report\.html|[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}\.png")


class _SecurityHeaders:
    """Pure ASGI middleware: adds SECURITY_HEADERS to every response of the app it wraps."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.lower().encode() not in names
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _authorized_user(request: Request):
    """The Airflow user of this request, as the api-server's own routes resolve it; 401/403 otherwise."""
    from fastapi import HTTPException
    from starlette.concurrency import run_in_threadpool

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    try:
        user = await get_user(request, None, await bearer_scheme(request))
    except HTTPException as exc:
        # Airflow answers a forged or revoked token with 403; here it is "not logged in" like a
        # missing one, so a browser is told to log in rather than that it lacks a permission.
        detail = "not logged in to Airflow" if exc.status_code == 401 else "invalid or expired Airflow token"
        raise HTTPException(
            401,
            f"{detail}: log in to the Airflow UI, or send Authorization: Bearer <JWT from POST /auth/token>",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    # Reports show what the pipeline's tasks produced: the same right as reading task instances.
    allowed = await run_in_threadpool(
        lambda: get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, user=user
        )
    )
    if not allowed:
        raise HTTPException(403, "this Airflow user may not read the pipeline's task instances")
    return user


def _file_under(root, parts):
    """The regular file root/parts..., or None: every segment checked, symlinks out of root refused."""
    if not parts or not all(SEGMENT.fullmatch(p) for p in parts):  # '' (a folder) fails too
        return None
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def _pages_app(resolve):
    """An app that answers GET/HEAD <path> with the file ``resolve(home, segments)`` names, or 404."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    from lmchain.home import Home

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route("/{path:path}", methods=["GET", "HEAD"])
    def page(path: str, user=Depends(_authorized_user)):
        # Decoded path: an encoded '/' only makes more segments, and each one is checked; an empty
        # one (a trailing '/', '//') names a folder, and folders are never listed.
        found = resolve(Home.from_env(), path.split("/") if path else [])
        if found is None:
            raise HTTPException(404, "no such report page")
        return FileResponse(found, media_type=MEDIA_TYPES[found.suffix.lower()])

    app.add_middleware(_SecurityHeaders)
    return app


def _data_docs_file(home, parts):
    from lmchain.quality import data_docs_dir

    parts = parts or ["index.html"]
    if not parts[-1].lower().endswith(tuple(DATA_DOCS_SUFFIXES)):
        return None
    return _file_under(data_docs_dir(home), parts)


def _report_file(home, parts):
    if not parts or len(parts) != 3 or parts[1] != "evaluate" or not REPORT_FILE.fullmatch(parts[2]):
        return None
    return _file_under(home.runs, parts)


class StageReportLink(BaseOperatorLink):
    """The gate task links to Data Docs; the evaluate task to its run's evaluation report."""

    name = "lmchain report"

    def get_link(self, operator, *, ti_key):
        from lmchain.artifacts import safe_run_id

        if ti_key.task_id == "evaluate":
            return f"/lmchain/runs/{safe_run_id(ti_key.run_id)}/evaluate/report.html"
        if ti_key.task_id == "gate":
            return "/lmchain/data-docs/index.html"
        return ""


class LmchainPlugin(AirflowPlugin):
    name = "lmchain"
    fastapi_apps = [
        {"app": _pages_app(_data_docs_file), "url_prefix": "/lmchain/data-docs", "name": "lmchain Data Docs"},
        {"app": _pages_app(_report_file), "url_prefix": "/lmchain/runs", "name": "lmchain evaluation reports"},
    ]
    global_operator_extra_links = [StageReportLink()]
    external_views = [
        {"name": "MLflow (lmchain)", "href": MLFLOW_URL, "destination": "nav", "category": "lmchain"},
        {"name": "Model service (lmchain)", "href": SERVE_URL, "destination": "nav", "category": "lmchain"},
        {
            "name": "Data Docs (lmchain)",
            "href": "/lmchain/data-docs/index.html",
            "destination": "nav",
            "category": "lmchain",
        },
    ]
