"""The model service: FastAPI app factory; routes stay thin, the parts live beside this module.

Endpoints: ``POST /v1/predict``, ``POST /v1/feedback``, ``GET /healthz`` (process up),
``GET /readyz`` (model loaded and warmed), ``GET /metrics`` (Prometheus) and
``POST /v1/admin/reload`` (check the registry alias now). The model loads in the background
after start-up, so probes answer while it loads; requests get 503 until it is ready.
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
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StringConstraints

from lmchain.artifacts import home, sha256_text
from lmchain.config import ServeConfig
from lmchain.serve.auth import ApiKeys
from lmchain.serve.batcher import MicroBatcher
from lmchain.serve.metrics import ServiceMetrics
from lmchain.serve.slot import ModelSlot
from lmchain.serve.store import ServingStore, default_url

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
               model_dir: str | Path | None = None) -> FastAPI:
    s = settings or ServeConfig()
    keys = ApiKeys.load(s.api_keys_file)
    metrics = ServiceMetrics()
    slot = ModelSlot(s, model_uri=model_uri, model_dir=Path(model_dir) if model_dir else None)
    store = ServingStore(s.store_url or default_url(home()))

    def run_batch(texts: list[str]):
        loaded = slot.current  # read once: the whole batch runs on one model
        return loaded.predictor.predict(texts), loaded

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_seconds.observe(seconds)
        metrics.texts.inc(size)

    batcher = MicroBatcher(run_batch, s.max_batch_size, s.max_wait_ms, on_batch)

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
            store.close()  # drains the prediction queue: nothing answered goes unrecorded

    app = FastAPI(title="lmchain model service", version="1", lifespan=lifespan,
                  description="Text classification with the registry's champion model. Send the API key as "
                              "`X-API-Key` or `Authorization: Bearer`.")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.slot, app.state.store, app.state.metrics, app.state.keys = slot, store, metrics, keys

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    async def require_key(key: Annotated[str | None, Depends(api_key_header)],
                    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if not keys.allows(key or (cred.credentials if cred else None)):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})

    def ready_model():
        if slot.current is None:
            detail = f"model failed to load: {slot.load_error}" if slot.load_error else "model is loading"
            raise HTTPException(503, detail, headers={"Retry-After": "5"})
        return slot.current

    Text = Annotated[str, StringConstraints(min_length=1, max_length=s.max_chars_per_text)]

    class PredictRequest(BaseModel):
        texts: list[Text] = Field(..., min_length=1, max_length=s.max_texts_per_request,
                                  description=f"1 to {s.max_texts_per_request} texts of at most "
                                              f"{s.max_chars_per_text} characters.")

    class FeedbackRequest(BaseModel):
        text: Text
        predicted_label: str = Field(min_length=1, max_length=200)
        correct_label: str = Field(min_length=1, max_length=200)
        request_id: str | None = Field(None, max_length=64, description="request_id of the prediction.")
        comment: str | None = Field(None, max_length=2000)

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

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=[Depends(require_key)],
              responses={401: {"description": "Missing or invalid API key."},
                         503: {"description": "Model not loaded (yet)."}})
    async def predict(req: PredictRequest) -> Response:
        ready_model()
        request_id = uuid.uuid4().hex
        result = await batcher.submit(req.texts)
        m = result.model
        if s.log_texts:
            log.info("request %s texts=%s", request_id, req.texts)
        now = time.time()
        store.log_predictions([
            {"request_id": request_id, "position": i, "created_at": now, "model": m.name, "version": m.version,
             "variant": m.variant, "text_sha256": sha256_text(t),
             "text": t if s.store_texts else None, "label": p["label"], "score": p["scores"][p["label"]]}
            for i, (t, p) in enumerate(zip(req.texts, result.predictions))])
        body = {"request_id": request_id, "model": m.name, "version": m.version, "variant": m.variant,
                "predictions": result.predictions}
        return _json(body, headers={"X-Request-ID": request_id})

    @app.post("/v1/feedback", response_model=FeedbackResponse, dependencies=[Depends(require_key)],
              responses={401: {"description": "Missing or invalid API key."}})
    def feedback(req: FeedbackRequest) -> FeedbackResponse:
        m = ready_model()
        labels = m.predictor.labels
        for field in ("predicted_label", "correct_label"):
            if getattr(req, field) not in labels:
                raise HTTPException(422, f"{field} {getattr(req, field)!r} is not one of the model's labels {labels}")
        feedback_id = uuid.uuid4().hex
        store.add_feedback({"feedback_id": feedback_id, "created_at": time.time(), "request_id": req.request_id,
                            "text": req.text, "text_sha256": sha256_text(req.text),
                            "predicted_label": req.predicted_label, "correct_label": req.correct_label,
                            "comment": req.comment, "model": m.name, "version": m.version})
        metrics.feedback.inc()
        return FeedbackResponse(feedback_id=feedback_id, stored=True)

    @app.post("/v1/admin/reload", dependencies=[Depends(require_key)],
              responses={401: {"description": "Missing or invalid API key."}})
    async def reload() -> dict[str, Any]:
        """Check the registry alias now and hot-swap if it moved (the deploy stage calls this)."""
        swapped = await slot.refresh()
        if swapped:
            on_swap(slot.current)
        m = ready_model()
        return {"swapped": swapped, "model": m.name, "version": m.version, "variant": m.variant}

    return app
