"""deploy: the variant choice and infra validation, and the model service's own settings."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import AfterValidator

from lmchain.config.base import Section, doc

ServingVariant = Literal["fp32", "onnx", "onnx-int8"]
SERVING_VARIANTS: tuple[str, ...] = typing.get_args(ServingVariant)


def _host_name(host: str) -> str:
    if not host.strip():
        raise ValueError("give host names (e.g. [localhost, api.example.com]) or ['*']")
    return host


class ServeConfig(Section):
    """How the model service runs (``lmchain serve`` and the deploy stage's candidate server)."""

    KEY = "deploy.service"
    host: str = doc("Interface the service binds to.", "127.0.0.1")
    port: int = doc("TCP port of the service.", 8000, ge=0, lt=65536, hint="(a TCP port)")
    variant: Literal[("auto", *SERVING_VARIANTS)] = doc(  # type: ignore[valid-type]
        "'auto' (what the deploy stage chose for this version), or one of " + ", ".join(SERVING_VARIANTS) + ".", "auto"
    )
    max_batch_size: int = doc("Most texts the micro-batcher gathers from concurrent requests.", 32, ge=1)
    model_batch_size: int = doc(
        "Texts per model call: a micro-batch is sorted by length and split into calls "
        "of this size, which pad less (8 was fastest for MiniLM on 2 CPU cores).",
        8,
        ge=1,
    )
    max_wait_ms: float = doc("How long the first request of a batch waits for others to join it.", 2.0, ge=0, le=1000)
    max_texts_per_request: int = doc("Most texts one /v1/predict request may carry (else 422).", 64, ge=1)
    max_chars_per_text: int = doc("Longest text accepted, in characters (else 422).", 5000, ge=1)
    max_length: int = doc("Tokens per text the model sees (longer texts are truncated).", 128)
    threads: int | None = doc("Inference threads (None: all cores).", None)
    follow_alias_s: float = doc(
        "Poll the registry alias this often and hot-swap to a new version (0: never).", 10.0, ge=0
    )
    api_keys_file: str | None = doc(
        "File of API key hashes (one 'sha256:<hex>' per line); the env var "
        "LMCHAIN_API_KEY_HASHES adds more. With no keys, the API is open, which "
        "the service allows only on a loopback host (see insecure_open).",
        None,
    )
    admin_keys_file: str | None = doc(
        "File of admin key hashes, for /v1/admin/* only (a predict key gets 403 "
        "there); LMCHAIN_ADMIN_KEY_HASHES adds more. With none, admin routes "
        "answer 403.",
        None,
    )
    insecure_open: bool = doc(
        "Start on a non-loopback host with no API keys: anyone who can reach it may "
        "predict and post feedback. Off: the service refuses to start that way.",
        False,
    )
    allowed_hosts: list[Annotated[str, AfterValidator(_host_name)]] = doc(
        "Host header names the service answers ('*': any; '*.example.com': its subdomains); others get 400. "
        "IP-address Host headers always pass: DNS rebinding, which this stops, needs a name.",
        factory=lambda: ["localhost"],
    )
    max_body_bytes: int = doc(
        "Largest request body, in bytes; a bigger one gets 413 before it is read.", 1 << 20, ge=1024
    )
    max_queue_texts: int = doc(
        "Texts waiting for the model beyond which /v1/predict answers 503 with "
        "Retry-After (a request always gets in when nothing waits).",
        512,
        ge=1,
    )
    rate_limit_per_s: float = doc(
        "/v1/predict requests per second per API key (per client address when "
        "open), as a token bucket; over it: 429 with Retry-After (0: no limit).",
        1000.0,
        ge=0,
    )
    rate_limit_burst: int = doc("Token bucket size of rate_limit_per_s: requests a key may send at once.", 2000, ge=1)
    feedback_rate_per_s: float = doc(
        "/v1/feedback requests per second per API key or client address (0: no limit).", 10.0, ge=0
    )
    feedback_burst: int = doc("Token bucket size of feedback_rate_per_s.", 100, ge=1)
    log_texts: bool = doc("Write request texts to the log (off: texts stay out of logs).", False)
    store_url: str | None = doc(
        "SQLAlchemy URL of the prediction and feedback store (None: SQLite in "
        "<home>/serving/store.db; e.g. postgresql+psycopg2://host/db).",
        None,
    )
    store_texts: bool = doc(
        "Keep prediction texts in the store (the feedback loop needs them; off: "
        "feedback must send the text, checked against its stored SHA-256).",
        True,
    )
    store_wait_s: float = doc(
        "How long /v1/predict waits for its predictions to be stored (or spilled) "
        "before it answers, so a kill -9 loses no answered prediction (0: answer "
        "at once).",
        2.0,
        ge=0,
    )
    recent_predictions: int = doc(
        "Predictions kept in memory so feedback finds them even before (or without) the database write.", 10_000, ge=1
    )
    spill_path: str | None = doc(
        "JSONL file for predictions the database refuses (None: <home>/serving/unstored_predictions.jsonl).", None
    )
    spill_buffer_rows: int = doc(
        "Predictions held in memory when the spill file cannot be written either "
        "(the oldest are dropped, and counted, beyond this).",
        10_000,
        ge=1,
    )
    shutdown_timeout_s: float = doc(
        "Longest wait for the prediction writer at shutdown; what it has not written by then goes to the spill file.",
        10.0,
        ge=0,
    )


class DeployConfig(Section):
    KEY = "deploy"
    host: str = doc("Host the candidate server binds to during infra validation.", "127.0.0.1")
    smoke_texts: list[str] | None = doc(
        "Texts the deploy smoke test sends to the service (None: a seeded sample of smoke_samples texts "
        "from the run's own validation split, so the check speaks the task's language).",
        None,
        min_length=1,
        hint="give at least one text, or leave it unset",
    )
    smoke_samples: int = doc(
        "How many validation texts the smoke test sends when smoke_texts is unset (at most "
        "service.max_texts_per_request).",
        8,
        ge=1,
    )
    smoke_seed: int = doc("Seed of the smoke-text sample drawn from the validation split.", 0)
    ready_timeout_s: float = doc("How long to wait for the service to load the model.", 180.0)
    variants: list[ServingVariant] = doc(
        "Serving variants to try; the fastest one whose test accuracy stays within max_accuracy_drop of fp32 is "
        "served.",
        factory=lambda: list(SERVING_VARIANTS),
        min_length=1,
        hint=f"name at least one of {', '.join(SERVING_VARIANTS)}",
    )
    max_accuracy_drop: float = doc(
        "Largest test-accuracy loss (fraction) a variant may cost vs fp32.", 0.005, ge=0, lt=1
    )
    variant_eval_examples: int | None = doc("Test examples the variant check uses (None: the whole test split).", None)
    p95_slo_ms: float = doc("Infra validation: p95 latency of single-text requests must stay below this.", 250.0, gt=0)
    latency_probe_requests: int = doc("Single-text requests the infra validation times.", 100, ge=1)
    service: ServeConfig = doc("Settings of the model service.", factory=ServeConfig)
