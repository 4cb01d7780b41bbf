"""The model service: FastAPI app factory; routes stay thin, the parts live beside this module.

Endpoints: ``POST /v1/predict``, ``POST /v1/feedback``, ``GET /healthz`` (process up),
``GET /readyz`` (model loaded and warmed), ``GET /metrics`` (Prometheus) and
``POST /v1/admin/reload`` (check the registry alias now). The model loads in the background
after start-up, so probes answer while it loads; requests get 503 until it is ready.

Closed by default: without API keys it starts only on a loopback host (else ``--insecure-open``),
admin routes take only admin keys, bodies are capped and checked strictly before any route runs
(lmchain.serve.limits), an over-full queue answers 503 at once, and a client that left costs no
model time. Rules of /v1/feedback: lmchain.serve.feedback.
"""


import asyncio
import contextlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StringConstraints

from lmchain.artifacts import sha256_text
from lmchain.config import ServeConfig
from lmchain.home import Home
from lmchain.serve.auth import ApiKeys, check_exposure, hash_key
from lmchain.serve.batcher import MicroBatcher, Overloaded
from lmchain.serve.feedback import FeedbackRejected, feedback_record
from lmchain.serve.limits import (BodyGuardMiddleware, HostAllowMiddleware, RateLimiter, ShedMiddleware,
                                  retry_after_header)
from lmchain.serve.metrics import ServiceMetrics
from lmchain.serve.slot import ModelSlot
from lmchain.serve.store import DuplicateFeedback, ServingStore, default_url

log = logging.getLogger("lmchain.serve")

ROUTES = {"/v1/predict", "/v1/feedback", "/healthz", "/readyz", "/metrics", "/v1/admin/reload"}


class Prediction(BaseModel):
    label: str
    label_id: int
    scores: dict[str, float]


class PredictResponse(BaseModel):
    request_id: str = Field(description="Quote it in /v1/feedback; predictions are stored under it.")
    model: str
    version: str
    variant: str
    predictions: list[Prediction]


class FeedbackResponse(BaseModel):
    feedback_id: str
    stored: bool
    text_sha256: str = Field(description="SHA-256 of the prediction's text, which the record holds.")
    predicted_label: str = Field(description="What the service answered for this prediction.")


MAX_ERRORS_SHOWN = 20


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """422 with where and why only: never the input, which may be megabytes or private text."""
    errors = exc.errors()
    shown = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
             for e in errors[:MAX_ERRORS_SHOWN]]
    body: dict[str, Any] = {"detail": shown}
    if len(errors) > MAX_ERRORS_SHOWN:
        body["more_errors"] = len(errors) - MAX_ERRORS_SHOWN
    return _json(body, 422)


async def _until_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # only http.disconnect is due once the body is read: never spin


async def answer_or_leave(request: Request, future: asyncio.Future):
    """The batcher's result, or None when the client disconnects first (its work is then withdrawn)."""
    gone = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not future.done():
            future.cancel()
    return None if future.cancelled() else future.result()


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json",
                    headers=headers)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times every request at little cost."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def create_app(model_uri: str | None = None, settings: ServeConfig | None = None,
               model_dir: str | Path | None = None, home: Home | None = None) -> FastAPI:
    """The service. ``home`` (default: the environment's) holds its registry, model downloads,
    variants and, unless ``settings`` name others, its store and spill file."""
    s = settings or ServeConfig()
    home = Home.of(home)
    keys = ApiKeys.load(s.api_keys_file)
    admin_keys = ApiKeys.load_admin(s.admin_keys_file)
    check_exposure(s.host, keys, s.insecure_open)  # before anything is opened
    metrics = ServiceMetrics()
    slot = ModelSlot(s, model_uri=model_uri, model_dir=Path(model_dir) if model_dir else None, home=home)
    store = ServingStore(s.store_url or default_url(home), spill_path=s.spill_path or home.spill_file,
                         buffer_rows=s.spill_buffer_rows, recent_rows=s.recent_predictions)
    metrics.watch_store(store)
    predict_limit = RateLimiter(s.rate_limit_per_s, s.rate_limit_burst)
    feedback_limit = RateLimiter(s.feedback_rate_per_s, s.feedback_burst)

    def run_batch(texts: list[str]):
        loaded = slot.current  # read once: the whole batch runs on one model
        return loaded.predictor.predict(texts), loaded

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_seconds.observe(seconds)
        metrics.texts.inc(size)

    batcher = MicroBatcher(run_batch, s.max_batch_size, s.max_wait_ms, on_batch,
                           max_queue_texts=s.max_queue_texts, on_skip=metrics.skipped_texts.inc)
    metrics.queue_texts.set_function(lambda: batcher.waiting_texts)

    def on_swap(loaded) -> None:
        metrics.swaps.inc()
        metrics.serving(loaded.name, loaded.version, loaded.variant)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if not keys.enabled:
            log.warning("no API keys configured: /v1/predict and /v1/feedback are open to anyone who can "
                        "reach %s:%s", s.host, s.port)
        batcher.start()

        async def load_then_follow():
            await slot.initial_load()
            if slot.current:
                metrics.serving(slot.current.name, slot.current.version, slot.current.variant)
            if model_uri and s.follow_alias_s > 0:  # also after a failed first load: it retries
                await slot.follow(s.follow_alias_s, on_swap, metrics.swap_failures.inc)

        background = asyncio.get_running_loop().create_task(load_then_follow())
        try:
            yield
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
            await batcher.stop()
            # Drains the prediction queue (nothing answered goes unrecorded), in bounded time.
            await asyncio.to_thread(store.close, s.shutdown_timeout_s)

    app = FastAPI(title="lmchain model service", version="1", lifespan=lifespan,
                  description="Text classification with the registry's champion model. Send the API key as "
                              "`X-API-Key` or `Authorization: Bearer`.")
    app.add_exception_handler(RequestValidationError, validation_error)
    # The last added runs first: metrics see every answer; the Host check and load shedding come
    # before the body is read and checked.
    app.add_middleware(BodyGuardMiddleware, max_bytes=s.max_body_bytes)
    app.add_middleware(ShedMiddleware, path="/v1/predict", is_full=lambda: batcher.waiting_texts >= s.max_queue_texts,
                       max_bytes=s.max_body_bytes, on_shed=metrics.overloaded.inc)
    app.add_middleware(HostAllowMiddleware, allowed=[*s.allowed_hosts, s.host])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.slot, app.state.store, app.state.metrics, app.state.keys = slot, store, metrics, keys
    app.state.batcher = batcher

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def presented(key: str | None, cred: HTTPAuthorizationCredentials | None) -> str | None:
        return key or (cred.credentials if cred else None)

    async def caller(request: Request, key: Annotated[str | None, Depends(api_key_header)],
                     cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        """Who is asking, for rate limits: the key (by hash), or the client address when open."""
        given = presented(key, cred)
        if not keys.allows(given):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if keys.enabled:
            return hash_key(given)
        return "addr:" + (request.client.host if request.client else "?")

    def rate_limited(limiter: RateLimiter, route: str, what: str):
        async def check(who: Annotated[str, Depends(caller)]) -> None:
            wait = limiter.retry_after(who)
            if wait:
                metrics.rate_limited.labels(route).inc()
                raise HTTPException(429, f"rate limit of {limiter.rate:g} {what} per second per API key or client "
                                         f"address (burst {limiter.burst:g}) reached; retry after the Retry-After "
                                         "seconds", headers=retry_after_header(wait))
        return check

    async def require_admin(key: Annotated[str | None, Depends(api_key_header)],
                            cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        # No admin key configured means no admin routes, also on loopback: a loopback service may
        # sit behind a proxy that makes it public, and nothing the deploy stage does needs them.
        if not admin_keys.enabled:
            raise HTTPException(403, "admin routes are off: no admin key is configured (put a hash from "
                                     "`lmchain serve --new-admin-key` in LMCHAIN_ADMIN_KEY_HASHES or the file "
                                     "named by deploy.service.admin_keys_file)")
        given = presented(key, cred)
        if admin_keys.knows(given):
            return
        if keys.knows(given):
            raise HTTPException(403, "this API key may not use admin routes: send an admin key")
        raise HTTPException(401, "missing or invalid admin key", headers={"WWW-Authenticate": "Bearer"})

    def ready_model():
        if slot.current is None:
            detail = f"model failed to load: {slot.load_error}" if slot.load_error else "model is loading"
            raise HTTPException(503, detail, headers={"Retry-After": "5"})
        return slot.current

    async def store_predictions(rows: list[dict[str, Any]]) -> None:
        """Hand rows to the writer; wait (up to store_wait_s) until they are stored or spilled."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def resolve(outcome: str) -> None:
            if not done.done():
                done.set_result(outcome)

        store.log_predictions(rows, lambda outcome: loop.call_soon_threadsafe(resolve, outcome))
        if s.store_wait_s > 0:
            try:
                await asyncio.wait_for(done, s.store_wait_s)
            except asyncio.TimeoutError:
                metrics.unconfirmed.inc()

    Text = Annotated[str, StringConstraints(min_length=1, max_length=s.max_chars_per_text)]

    class PredictRequest(BaseModel):
        texts: list[Text] = Field(..., min_length=1, max_length=s.max_texts_per_request,
                                  description=f"1 to {s.max_texts_per_request} texts of at most "
                                              f"{s.max_chars_per_text} characters.")

    class FeedbackRequest(BaseModel):
        request_id: str = Field(min_length=1, max_length=64, description="request_id that /v1/predict returned.")
        position: int = Field(0, ge=0, le=100_000, description="Index of the text in that request's texts.")
        correct_label: str = Field(min_length=1, max_length=200)
        comment: str | None = Field(None, max_length=2000)
        text: Text | None = Field(None, description="Needed only where the service keeps no texts "
                                                    "(checked against the prediction's SHA-256); else optional "
                                                    "and must equal the prediction's text.")
        predicted_label: str | None = Field(None, max_length=200,
                                            description="Optional; must equal the service's answer.")

    # Cheap handlers are async: a sync one would cost a thread-pool hop per request.
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "Model not loaded (yet)."}})
    async def readyz() -> dict[str, str]:
        m = ready_model()
        return {"status": "ready", "model": m.name, "version": m.version, "variant": m.variant}

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/predict", response_model=PredictResponse,
              dependencies=[Depends(rate_limited(predict_limit, "/v1/predict", "requests"))],
              responses={401: {"description": "Missing or invalid API key."},
                         429: {"description": "Rate limit of this key reached (see Retry-After)."},
                         503: {"description": "Model not loaded (yet), or the queue is full (see Retry-After)."}})
    async def predict(req: PredictRequest, request: Request) -> Response:
        ready_model()
        request_id = uuid.uuid4().hex
        try:
            queued = batcher.enqueue(req.texts)
        except Overloaded as exc:
            metrics.overloaded.inc()
            raise HTTPException(503, f"the service is at capacity ({exc}); retry after the Retry-After seconds",
                                headers={"Retry-After": "1"}) from None
        result = await answer_or_leave(request, queued)
        if result is None:  # nobody to answer: no answer to record either
            metrics.disconnected.inc()
            return Response(status_code=499)
        m = result.model
        if s.log_texts:
            log.info("request %s texts=%s", request_id, req.texts)
        now = time.time()
        await store_predictions([
            {"request_id": request_id, "position": i, "created_at": now, "model": m.name, "version": m.version,
             "variant": m.variant, "text_sha256": sha256_text(t),
             "text": t if s.store_texts else None, "label": p["label"], "score": p["scores"][p["label"]]}
            for i, (t, p) in enumerate(zip(req.texts, result.predictions))])
        body = {"request_id": request_id, "model": m.name, "version": m.version, "variant": m.variant,
                "predictions": result.predictions}
        return _json(body, headers={"X-Request-ID": request_id})

    @app.post("/v1/feedback", response_model=FeedbackResponse,
              dependencies=[Depends(rate_limited(feedback_limit, "/v1/feedback", "feedback posts"))],
              responses={401: {"description": "Missing or invalid API key."},
                         404: {"description": "No prediction with this request_id and position."},
                         409: {"description": "This prediction already has its feedback."},
                         422: {"description": "Invalid, or disagrees with the stored prediction."},
                         429: {"description": "Rate limit of this key reached (see Retry-After)."},
                         503: {"description": "Model not loaded (yet), or the store failed: retry."}})
    def feedback(req: FeedbackRequest) -> FeedbackResponse:
        """Correct (or confirm) one prediction; the record is on disk before the 200."""
        m = ready_model()
        try:
            record = feedback_record(store, req.request_id, req.position, req.correct_label, m.predictor.labels,
                                     text=req.text, predicted_label=req.predicted_label, comment=req.comment)
            store.add_feedback(record)
        except FeedbackRejected as exc:
            raise HTTPException(exc.status, exc.detail) from None
        except DuplicateFeedback:
            raise HTTPException(409, f"position {req.position} of this request already has its feedback; a "
                                     "recorded label is never replaced") from None
        except Exception as exc:  # the database failed: nothing stored, and the client may retry
            metrics.feedback_errors.inc()
            log.error("could not store feedback: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:300])
            raise HTTPException(503, "the feedback store failed; nothing was stored; retry later",
                                headers={"Retry-After": "5"}) from None
        metrics.feedback.inc()
        return FeedbackResponse(feedback_id=record["feedback_id"], stored=True, text_sha256=record["text_sha256"],
                                predicted_label=record["predicted_label"])

    @app.post("/v1/admin/reload", dependencies=[Depends(require_admin)],
              responses={401: {"description": "Missing or invalid admin key."},
                         403: {"description": "Not an admin key, or no admin key configured."}})
    async def reload() -> dict[str, Any]:
        """Check the registry alias now and hot-swap if it moved. Needs an admin key."""
        swapped = await slot.refresh()
        if swapped:
            on_swap(slot.current)
        m = ready_model()
        return {"swapped": swapped, "model": m.name, "version": m.version, "variant": m.variant}

    return app
