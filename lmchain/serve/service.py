"""What the model service does, without HTTP: the model slot, the micro-batcher, the prediction and
feedback store, reloads and metrics, behind a few methods that :mod:`lmchain.serve.routes` calls.

Refusals are exceptions that say what went wrong (:class:`NotReady`, :class:`~lmchain.serve.batcher.
Overloaded`, :class:`~lmchain.serve.feedback.FeedbackRejected`, :class:`~lmchain.serve.store.
DuplicateFeedback`, :class:`FeedbackStoreFailed`); the routes turn them into status codes and
headers. So a test can drive the whole service in an event loop, without a server or a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from lmchain.artifacts import sha256_text
from lmchain.config import ServeConfig
from lmchain.home import Home
from lmchain.serve.auth import ApiKeys, check_exposure
from lmchain.serve.batcher import BatchResult, MicroBatcher, Overloaded
from lmchain.serve.feedback import FeedbackRejected, feedback_record
from lmchain.serve.limits import RateLimiter
from lmchain.serve.metrics import ServiceMetrics
from lmchain.serve.slot import Loaded, ModelSlot
from lmchain.serve.store import DuplicateFeedback, ServingStore, default_url

log = logging.getLogger("lmchain.serve")


class NotReady(Exception):
    """No model to answer with: nothing is deployed yet, it is still loading, or its load failed."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class FeedbackStoreFailed(Exception):
    """The database did not take a feedback record: nothing was stored, and the client may retry."""


class PredictorService:
    """One service instance. ``home`` (default: the environment's) holds its registry, model
    downloads, variants and, unless ``settings`` name others, its store and spill file.

    Built before anything listens: API keys are loaded and an open, exposed host is refused
    (ConfigError) here. The background parts (batcher, model load, alias poller, store writer)
    run inside :meth:`running`."""

    def __init__(
        self,
        settings: ServeConfig | None = None,
        model_uri: str | None = None,
        model_dir: str | Path | None = None,
        home: Home | None = None,
    ):
        s = self.settings = settings or ServeConfig()
        home = Home.of(home)
        self.model_uri = model_uri
        self.keys = ApiKeys.load(s.api_keys_file)
        self.admin_keys = ApiKeys.load_admin(s.admin_keys_file)
        check_exposure(s.host, self.keys, s.insecure_open)  # before anything is opened
        self.metrics = ServiceMetrics()
        self.slot = ModelSlot(s, model_uri=model_uri, model_dir=Path(model_dir) if model_dir else None, home=home)
        self.store = ServingStore(
            s.store_url or default_url(home),
            spill_path=s.spill_path or home.spill_file,
            buffer_rows=s.spill_buffer_rows,
            recent_rows=s.recent_predictions,
        )
        self.metrics.watch_store(self.store)
        self.predict_limit = RateLimiter(s.rate_limit_per_s, s.rate_limit_burst)
        self.feedback_limit = RateLimiter(s.feedback_rate_per_s, s.feedback_burst)
        self.batcher = MicroBatcher(
            self._run_batch,
            s.max_batch_size,
            s.max_wait_ms,
            self._on_batch,
            max_queue_texts=s.max_queue_texts,
            on_skip=self.metrics.skipped_texts.inc,
        )
        self.metrics.queue_texts.set_function(lambda: self.batcher.waiting_texts)

    # ------------------------------------------------------------------ batcher and slot callbacks

    def _run_batch(self, texts: list[str]):
        loaded = self.ready_model()  # read once: the whole batch runs on one model
        return loaded.predictor.predict(texts), loaded

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.texts.inc(size)

    def _on_swap(self, loaded: Loaded) -> None:
        self.metrics.swaps.inc()
        self.metrics.serving(loaded.name, loaded.version, loaded.variant)

    # ------------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PredictorService]:
        """Batcher started, model loading in the background (then the alias followed); on the way
        out the prediction queue is drained into the store, in bounded time."""
        s = self.settings
        if not self.keys.enabled:
            log.warning(
                "no API keys configured: /v1/predict and /v1/feedback are open to anyone who can reach %s:%s",
                s.host,
                s.port,
            )
        self.batcher.start()
        background = asyncio.get_running_loop().create_task(self._load_then_follow())
        try:
            yield self
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
            await self.batcher.stop()
            # Drains the prediction queue (nothing answered goes unrecorded), in bounded time.
            await asyncio.to_thread(self.store.close, s.shutdown_timeout_s)

    async def _load_then_follow(self) -> None:
        slot = self.slot
        await slot.initial_load()
        if slot.current:
            self.metrics.serving(slot.current.name, slot.current.version, slot.current.variant)
        # Also after a failed first load (it retries), and while waiting for the first deploy.
        if (self.model_uri or slot.deployment) and self.settings.follow_alias_s > 0:
            await slot.follow(self.settings.follow_alias_s, self._on_swap, self.metrics.swap_failures.inc)

    # ------------------------------------------------------------------ what the routes call

    def ready_model(self) -> Loaded:
        """The model answering now; NotReady while nothing is deployed, while it loads or after its
        load failed."""
        current = self.slot.current
        if current is None:
            error = self.slot.load_error
            if error:
                raise NotReady(f"model failed to load: {error}")
            raise NotReady(self.slot.waiting or "model is loading")
        return current

    def readiness(self) -> dict[str, str]:
        m = self.ready_model()
        return {"status": "ready", "model": m.name, "version": m.version, "variant": m.variant}

    def queue_full(self) -> bool:
        """Whether /v1/predict should be shed before its body is read."""
        return self.batcher.waiting_texts >= self.settings.max_queue_texts

    async def predict(
        self, texts: list[str], client_gone: Callable[[], Awaitable[None]] | None = None
    ) -> dict[str, Any] | None:
        """Classify ``texts`` in the next micro-batch and store the predictions; returns the answer
        body, or None when ``client_gone`` returns first (the texts are then withdrawn, and nothing
        is recorded). Raises NotReady, or Overloaded when the queue is full."""
        self.ready_model()
        request_id = uuid.uuid4().hex
        try:
            queued = self.batcher.enqueue(texts)
        except Overloaded:
            self.metrics.overloaded.inc()
            raise
        result = await _answer_or_leave(queued, client_gone)
        if result is None:  # nobody to answer: no answer to record either
            self.metrics.disconnected.inc()
            return None
        m = result.model
        s = self.settings
        if s.log_texts:
            log.info("request %s texts=%s", request_id, texts)
        now = time.time()
        await self.store_predictions(
            [
                {
                    "request_id": request_id,
                    "position": i,
                    "created_at": now,
                    "model": m.name,
                    "version": m.version,
                    "variant": m.variant,
                    "text_sha256": sha256_text(t),
                    "text": t if s.store_texts else None,
                    "label": p["label"],
                    "score": p["scores"][p["label"]],
                }
                for i, (t, p) in enumerate(zip(texts, result.predictions))
            ]
        )
        return {
            "request_id": request_id,
            "model": m.name,
            "version": m.version,
            "variant": m.variant,
            "predictions": result.predictions,
        }

    async def store_predictions(self, rows: list[dict[str, Any]]) -> None:
        """Hand rows to the writer; wait (up to store_wait_s) until they are stored or spilled."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def resolve(outcome: str) -> None:
            if not done.done():
                done.set_result(outcome)

        self.store.log_predictions(rows, lambda outcome: loop.call_soon_threadsafe(resolve, outcome))
        if self.settings.store_wait_s > 0:
            try:
                await asyncio.wait_for(done, self.settings.store_wait_s)
            except asyncio.TimeoutError:
                self.metrics.unconfirmed.inc()

    def feedback(
        self,
        request_id: str,
        position: int,
        correct_label: str,
        *,
        text: str | None = None,
        predicted_label: str | None = None,
        comment: str | None = None,
    ) -> dict[str, Any]:
        """Store the feedback on one prediction (on disk when this returns) and return its record.

        Blocking (database write): call it off the event loop. Raises NotReady, FeedbackRejected
        (it does not name a prediction of this service, or disagrees with it), DuplicateFeedback,
        or FeedbackStoreFailed."""
        m = self.ready_model()
        try:
            record = feedback_record(
                self.store,
                request_id,
                position,
                correct_label,
                m.predictor.labels,
                text=text,
                predicted_label=predicted_label,
                comment=comment,
            )
            self.store.add_feedback(record)
        except (FeedbackRejected, DuplicateFeedback):
            raise
        except Exception as exc:  # the database failed: nothing stored, and the client may retry
            self.metrics.feedback_errors.inc()
            log.error("could not store feedback: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:300])
            raise FeedbackStoreFailed(str(exc)) from exc
        self.metrics.feedback.inc()
        return record

    async def reload(self) -> dict[str, Any]:
        """Check the registry alias now and hot-swap if it moved."""
        swapped = await self.slot.refresh()
        if swapped:
            self._on_swap(self.ready_model())
        m = self.ready_model()
        return {"swapped": swapped, "model": m.name, "version": m.version, "variant": m.variant}

    def render_metrics(self) -> bytes:
        return self.metrics.render()


async def _answer_or_leave(
    future: asyncio.Future, client_gone: Callable[[], Awaitable[None]] | None
) -> BatchResult | None:
    """The batcher's result, or None when ``client_gone`` returns first (its work is then withdrawn)."""
    if client_gone is None:
        return await future
    gone = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not future.done():
            future.cancel()
    return None if future.cancelled() else future.result()
