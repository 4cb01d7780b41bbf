"""The model service: FastAPI app factory, wiring only.

Endpoints: ``POST /v1/predict``, ``POST /v1/feedback``, ``GET /healthz`` (process up),
``GET /readyz`` (model loaded and warmed), ``GET /metrics`` (Prometheus) and
``POST /v1/admin/reload`` (check the registry alias now). The model loads in the background
after start-up, so probes answer while it loads; requests get 503 until it is ready.

Closed by default: without API keys it starts only on a loopback host (else ``--insecure-open``),
admin routes take only admin keys, bodies are capped and checked strictly before any route runs
(lmchain.serve.limits), an over-full queue answers 503 at once, and a client that left costs no
model time. Rules of /v1/feedback: lmchain.serve.feedback.

The parts: :mod:`~lmchain.serve.service` (what the service does, without HTTP),
:mod:`~lmchain.serve.routes` (HTTP to service calls and back), :mod:`~lmchain.serve.schemas`
(request and response bodies).
"""

import contextlib
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from lmchain.config import ServeConfig
from lmchain.home import Home
from lmchain.serve.limits import BodyGuardMiddleware, HostAllowMiddleware, ShedMiddleware
from lmchain.serve.metrics import MetricsMiddleware
from lmchain.serve.routes import ROUTES, routers, validation_error
from lmchain.serve.service import PredictorService


def create_app(
    model_uri: str | None = None,
    settings: ServeConfig | None = None,
    model_dir: str | Path | None = None,
    home: Home | None = None,
) -> FastAPI:
    """The service. ``home`` (default: the environment's) holds its registry, model downloads,
    variants and, unless ``settings`` name others, its store and spill file."""
    service = PredictorService(settings, model_uri=model_uri, model_dir=model_dir, home=home)
    s = service.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with service.running():
            yield

    app = FastAPI(
        title="lmchain model service",
        version="1",
        lifespan=lifespan,
        description="Text classification with the registry's champion model. Send the API key as "
        "`X-API-Key` or `Authorization: Bearer`.",
    )
    # Starlette types handlers over Exception; it calls this one with RequestValidationError only.
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    # The last added runs first: metrics see every answer; the Host check and load shedding come
    # before the body is read and checked.
    app.add_middleware(BodyGuardMiddleware, max_bytes=s.max_body_bytes)
    app.add_middleware(
        ShedMiddleware,
        path="/v1/predict",
        is_full=service.queue_full,
        max_bytes=s.max_body_bytes,
        on_shed=service.metrics.overloaded.inc,
    )
    app.add_middleware(HostAllowMiddleware, allowed=[*s.allowed_hosts, s.host])
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=ROUTES)
    for router in routers(service):
        app.include_router(router)
    app.state.service = service
    app.state.slot, app.state.store, app.state.metrics = service.slot, service.store, service.metrics
    app.state.keys, app.state.batcher = service.keys, service.batcher
    return app
