"""Prometheus metrics of the service, in a registry per app (tests build many apps), and the ASGI
middleware that counts and times its requests."""

from __future__ import annotations

import time
from typing import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# StoreStats field -> (metric name, help): read from the store at scrape time.
STORE_COUNTERS = {
    "write_errors": ("lmchain_store_write_errors_total", "Failed database writes of predictions (retries included)."),
    "unstored_rows": (
        "lmchain_store_unstored_predictions_total",
        "Predictions the database did not take (spilled or held in memory instead).",
    ),
    "spilled_rows": ("lmchain_store_spilled_predictions_total", "Predictions written to the spill file."),
    "spill_errors": ("lmchain_store_spill_errors_total", "Failed writes of the spill file."),
    "buffered_rows": (
        "lmchain_store_buffered_predictions_total",
        "Predictions held in memory because the spill file failed too.",
    ),
    "dropped_rows": (
        "lmchain_store_dropped_predictions_total",
        "Predictions lost: pushed out of the full in-memory buffer.",
    ),
    "queue_full": ("lmchain_store_queue_full_total", "Requests that found the writer's queue full."),
    "writer_errors": ("lmchain_store_writer_errors_total", "Unexpected errors caught in the writer thread."),
}


class StoreCollector:
    def __init__(self, store) -> None:
        self.store = store

    def collect(self):
        for field, (name, help_text) in STORE_COUNTERS.items():
            family = CounterMetricFamily(name.removesuffix("_total"), help_text)
            family.add_metric([], getattr(self.store.stats, field))
            yield family
        yield GaugeMetricFamily(
            "lmchain_store_buffer_predictions", "Predictions held in memory now.", value=self.store.buffered
        )


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lmchain_requests_total", "HTTP requests by route and status code.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "lmchain_request_latency_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lmchain_batch_size", "Texts per model call of the micro-batcher.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "lmchain_batch_seconds", "Model time per micro-batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.texts = Counter("lmchain_predicted_texts_total", "Texts classified.", registry=r)
        self.feedback = Counter("lmchain_feedback_total", "Feedback records stored.", registry=r)
        self.model_info = Gauge(
            "lmchain_model_info",
            "The model version being served (value 1).",
            ["model", "version", "variant"],
            registry=r,
        )
        self.swaps = Counter("lmchain_model_swaps_total", "Hot swaps to a new model version.", registry=r)
        self.queue_texts = Gauge("lmchain_queue_waiting_texts", "Texts waiting for the model now.", registry=r)
        self.overloaded = Counter(
            "lmchain_overloaded_total", "Predict requests refused with 503: queue full.", registry=r
        )
        self.rate_limited = Counter(
            "lmchain_rate_limited_total", "Requests refused with 429, by route.", ["route"], registry=r
        )
        self.skipped_texts = Counter(
            "lmchain_skipped_texts_total", "Texts never run because their client disconnected first.", registry=r
        )
        self.disconnected = Counter(
            "lmchain_disconnected_total", "Predict requests whose client left before the answer.", registry=r
        )
        self.unconfirmed = Counter(
            "lmchain_store_unconfirmed_total",
            "Predict answers sent before the store confirmed the rows (store_wait_s).",
            registry=r,
        )
        self.feedback_errors = Counter(
            "lmchain_feedback_store_errors_total", "Feedback the store failed to write (answered 503).", registry=r
        )
        self.swap_failures = Counter(
            "lmchain_model_swap_failures_total",
            "New versions that failed to load or warm (the old one keeps serving).",
            registry=r,
        )

    def watch_store(self, store) -> None:
        self.registry.register(StoreCollector(store))

    def serving(self, model: str, version: str, variant: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model, version, variant).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times every request at little cost.

    Requests are labelled by path only for ``routes`` (every other path counts as "other"), so a
    client cannot grow the label set."""

    def __init__(self, app, metrics: ServiceMetrics, routes: Collection[str]):
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
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
