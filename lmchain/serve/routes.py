"""HTTP for the model service: FastAPI routers that turn requests into
:class:`~lmchain.serve.service.PredictorService` calls, and its answers and refusals into status
codes, headers and JSON. Nothing here decides anything the service does.

Auth: ``X-API-Key`` or ``Authorization: Bearer``; without configured keys the API is open (the
service refuses to start that way on a reachable host). Admin routes take only admin keys, and
none at all when no admin key is configured.
"""

# No `from __future__ import annotations`: FastAPI reads the request models, built per service
# inside these functions, from the handlers' real annotations.

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from lmchain.serve.auth import hash_key
from lmchain.serve.batcher import Overloaded
from lmchain.serve.feedback import FeedbackRejected
from lmchain.serve.limits import RateLimiter, retry_after_header
from lmchain.serve.schemas import FeedbackResponse, PredictResponse, request_models
from lmchain.serve.service import FeedbackStoreFailed, NotReady, PredictorService
from lmchain.serve.store import DuplicateFeedback

# The label values of the request metrics (anything else counts as "other": bounded cardinality).
ROUTES = {"/v1/predict", "/v1/feedback", "/healthz", "/readyz", "/metrics", "/v1/admin/reload"}

MAX_ERRORS_SHOWN = 20


def routers(service: PredictorService) -> list[APIRouter]:
    return [probe_router(service), api_router(service), admin_router(service)]


# --------------------------------------------------------------------------- answers and refusals


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json", headers=headers
    )


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """422 with where and why only: never the input, which may be megabytes or private text."""
    errors = exc.errors()
    shown = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors[:MAX_ERRORS_SHOWN]
    ]
    body: dict[str, Any] = {"detail": shown}
    if len(errors) > MAX_ERRORS_SHOWN:
        body["more_errors"] = len(errors) - MAX_ERRORS_SHOWN
    return json_response(body, 422)


def not_ready(exc: NotReady) -> HTTPException:
    return HTTPException(503, exc.detail, headers={"Retry-After": "5"})


async def until_disconnect(receive) -> None:
    """Returns when the client has gone (its connection closed before the answer)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # only http.disconnect is due once the body is read: never spin


# --------------------------------------------------------------------------- keys and rate limits

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
bearer = HTTPBearer(auto_error=False)
ApiKey = Annotated[str | None, Depends(api_key_header)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def presented(key: str | None, cred: HTTPAuthorizationCredentials | None) -> str | None:
    return key or (cred.credentials if cred else None)


def caller_of(service: PredictorService):
    keys = service.keys

    async def caller(request: Request, key: ApiKey, cred: Bearer) -> str:
        """Who is asking, for rate limits: the key (by hash), or the client address when open."""
        given = presented(key, cred)
        if not keys.allows(given):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if keys.enabled and given is not None:  # allows() refused a missing key when keys are on
            return hash_key(given)
        return "addr:" + (request.client.host if request.client else "?")

    return caller


def rate_limited(service: PredictorService, limiter: RateLimiter, route: str, what: str):
    async def check(who: Annotated[str, Depends(caller_of(service))]) -> None:
        wait = limiter.retry_after(who)
        if wait:
            service.metrics.rate_limited.labels(route).inc()
            raise HTTPException(
                429,
                f"rate limit of {limiter.rate:g} {what} per second per API key or client "
                f"address (burst {limiter.burst:g}) reached; retry after the Retry-After "
                "seconds",
                headers=retry_after_header(wait),
            )

    return check


def admin_only(service: PredictorService):
    keys, admin_keys = service.keys, service.admin_keys

    async def require_admin(key: ApiKey, cred: Bearer) -> None:
        # No admin key configured means no admin routes, also on loopback: a loopback service may
        # sit behind a proxy that makes it public, and nothing the deploy stage does needs them.
        if not admin_keys.enabled:
            raise HTTPException(
                403,
                "admin routes are off: no admin key is configured (put a hash from "
                "`lmchain serve --new-admin-key` in LMCHAIN_ADMIN_KEY_HASHES or the file "
                "named by deploy.service.admin_keys_file)",
            )
        given = presented(key, cred)
        if admin_keys.knows(given):
            return
        if keys.knows(given):
            raise HTTPException(403, "this API key may not use admin routes: send an admin key")
        raise HTTPException(401, "missing or invalid admin key", headers={"WWW-Authenticate": "Bearer"})

    return require_admin


# --------------------------------------------------------------------------- routers
# Cheap handlers are async: a sync one would cost a thread-pool hop per request.


def probe_router(service: PredictorService) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "Model not loaded (yet)."}})
    async def readyz() -> dict[str, str]:
        try:
            return service.readiness()
        except NotReady as exc:
            raise not_ready(exc) from None

    @router.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(service.render_metrics(), media_type="text/plain; version=0.0.4")

    return router


def api_router(service: PredictorService) -> APIRouter:
    router = APIRouter()
    # Built per settings (the limits come from the config), so mypy sees variables, not classes:
    # the routes read their parameter through an Any for that reason only.
    PredictRequest, FeedbackRequest = request_models(service.settings)

    @router.post(
        "/v1/predict",
        response_model=PredictResponse,
        dependencies=[Depends(rate_limited(service, service.predict_limit, "/v1/predict", "requests"))],
        responses={
            401: {"description": "Missing or invalid API key."},
            429: {"description": "Rate limit of this key reached (see Retry-After)."},
            503: {"description": "Model not loaded (yet), or the queue is full (see Retry-After)."},
        },
    )
    async def predict(body_in: PredictRequest, request: Request) -> Response:  # type: ignore[valid-type]
        req: Any = body_in
        try:
            body = await service.predict(req.texts, lambda: until_disconnect(request.receive))
        except NotReady as exc:
            raise not_ready(exc) from None
        except Overloaded as exc:
            raise HTTPException(
                503,
                f"the service is at capacity ({exc}); retry after the Retry-After seconds",
                headers={"Retry-After": "1"},
            ) from None
        if body is None:  # the client left: nobody to answer
            return Response(status_code=499)
        return json_response(body, headers={"X-Request-ID": body["request_id"]})

    @router.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        dependencies=[Depends(rate_limited(service, service.feedback_limit, "/v1/feedback", "feedback posts"))],
        responses={
            401: {"description": "Missing or invalid API key."},
            404: {"description": "No prediction with this request_id and position."},
            409: {"description": "This prediction already has its feedback."},
            422: {"description": "Invalid, or disagrees with the stored prediction."},
            429: {"description": "Rate limit of this key reached (see Retry-After)."},
            503: {"description": "Model not loaded (yet), or the store failed: retry."},
        },
    )
    def feedback(body_in: FeedbackRequest) -> FeedbackResponse:  # type: ignore[valid-type]
        """Correct (or confirm) one prediction; the record is on disk before the 200."""
        req: Any = body_in
        try:
            record = service.feedback(
                req.request_id,
                req.position,
                req.correct_label,
                text=req.text,
                predicted_label=req.predicted_label,
                comment=req.comment,
            )
        except NotReady as exc:
            raise not_ready(exc) from None
        except FeedbackRejected as exc:
            raise HTTPException(exc.status, exc.detail) from None
        except DuplicateFeedback:
            raise HTTPException(
                409,
                f"position {req.position} of this request already has its feedback; a recorded label is never replaced",
            ) from None
        except FeedbackStoreFailed:
            raise HTTPException(
                503, "the feedback store failed; nothing was stored; retry later", headers={"Retry-After": "5"}
            ) from None
        return FeedbackResponse(
            feedback_id=record["feedback_id"],
            stored=True,
            text_sha256=record["text_sha256"],
            predicted_label=record["predicted_label"],
        )

    return router


def admin_router(service: PredictorService) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/admin/reload",
        dependencies=[Depends(admin_only(service))],
        responses={
            401: {"description": "Missing or invalid admin key."},
            403: {"description": "Not an admin key, or no admin key configured."},
        },
    )
    async def reload() -> dict[str, Any]:
        """Check the registry alias now and hot-swap if it moved. Needs an admin key."""
        try:
            return await service.reload()
        except NotReady as exc:
            raise not_ready(exc) from None

    return router
