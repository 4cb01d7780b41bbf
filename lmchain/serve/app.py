"""The model service: FastAPI app factory, model loaded in ``lifespan``, thin routes.

``POST /v1/predict`` takes ``{"texts": [...]}`` and returns one prediction per text. Inference
runs in FastAPI's thread pool (sync route), off the event loop. ``GET /readyz`` answers 200
only once the model is loaded; ``GET /healthz`` answers as soon as the process is up.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

log = logging.getLogger("lmchain.serve")

MAX_TEXTS = 256
MAX_CHARS = 20000


class PredictRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, max_length=MAX_TEXTS,
                             description=f"Texts to classify (1 to {MAX_TEXTS}).")


class Prediction(BaseModel):
    label: str
    label_id: int
    scores: dict[str, float]


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Prediction]


def create_app(model_uri: str) -> FastAPI:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        from starlette.concurrency import run_in_threadpool

        from lmchain.registry import resolve_model
        from lmchain.serve.predictor import Predictor

        t0 = time.perf_counter()
        name, version, folder = await run_in_threadpool(resolve_model, model_uri)
        predictor = await run_in_threadpool(Predictor, folder)
        await run_in_threadpool(predictor.predict, ["warm-up"])  # first call pays one-off costs
        state.update(name=name, version=version, predictor=predictor)
        log.warning("lmchain serve: %s version %s loaded in %.1fs", name, version, time.perf_counter() - t0)
        yield
        state.clear()

    app = FastAPI(title="lmchain model service", version="1", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        if "predictor" not in state:
            raise HTTPException(503, "model not loaded yet")
        return {"status": "ready", "model": state["name"], "version": state["version"]}

    @app.post("/v1/predict", response_model=PredictResponse)
    def predict(req: PredictRequest) -> PredictResponse:
        if "predictor" not in state:
            raise HTTPException(503, "model not loaded yet")
        too_long = [i for i, t in enumerate(req.texts) if len(t) > MAX_CHARS]
        if too_long:
            raise HTTPException(422, f"texts {too_long[:10]} are longer than {MAX_CHARS} characters")
        preds = state["predictor"].predict(req.texts)
        return PredictResponse(model=state["name"], version=state["version"],
                               predictions=[Prediction(**p) for p in preds])

    return app
