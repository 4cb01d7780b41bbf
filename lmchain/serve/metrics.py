"""Prometheus metrics of the service, in a registry per app (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmchain_requests_total", "HTTP requests by route and status code.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("lmchain_request_latency_seconds", "HTTP request latency by route.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("lmchain_batch_size", "Texts per model call of the micro-batcher.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("lmchain_batch_seconds", "Model time per micro-batch.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.texts = Counter("lmchain_predicted_texts_total", "Texts classified.", registry=r)
        self.feedback = Counter("lmchain_feedback_total", "Feedback records stored.", registry=r)
        self.model_info = Gauge("lmchain_model_info", "The model version being served (value 1).",
                                ["model", "version", "variant"], registry=r)
        self.swaps = Counter("lmchain_model_swaps_total", "Hot swaps to a new model version.", registry=r)
        self.swap_failures = Counter("lmchain_model_swap_failures_total",
                                     "New versions that failed to load or warm (the old one keeps serving).",
                                     registry=r)

    def serving(self, model: str, version: str, variant: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model, version, variant).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
