"""The deploy stage's checks: the serving-variant choice and infra validation in a real server
(the stage itself is :mod:`lmchain.stages.deploy`).

``choose_variant`` scores each configured variant on the test split and keeps the fastest within
the accuracy budget; ``infra_validate`` runs ``lmchain serve`` on the candidate in a fresh
process on a free port, waits for ``/readyz``, sends the smoke texts, times single-text requests
against the p95 SLO and checks that the served labels equal the in-process ones. Failures raise
:class:`DeployFailed`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import IO, Any

from lmchain.artifacts import RunContext
from lmchain.config import DeployConfig
from lmchain.errors import LmchainError
from lmchain.netutil import free_port


class DeployFailed(LmchainError):
    """The candidate did not pass infra validation; the alias was not moved."""


# --------------------------------------------------------------------------- HTTP helpers


def _request(
    url: str, payload: dict | None = None, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}


def post_json(url: str, payload: dict, timeout: float = 60.0, headers: dict[str, str] | None = None) -> dict:
    status, body = _request(url, payload, timeout, headers)
    if status != 200:
        raise DeployFailed(f"POST {url} answered {status}: {body}")
    return body


def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float, output: deque) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployFailed(
                f"service exited with {proc.returncode} before it was ready: " + " | ".join(list(output)[-5:])
            )
        try:
            status, body = _request(base + "/readyz", timeout=2)
            if status == 200:
                return body
            if "failed to load" in str(body.get("detail", "")):
                raise DeployFailed(f"candidate service could not load the model: {body['detail']}")
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise DeployFailed(f"service not ready after {timeout_s}s; raise deploy.ready_timeout_s")


# --------------------------------------------------------------------------- variant choice


def choose_variant(
    folder: Path, test: list[dict], cfg: DeployConfig, cache: Path | None = None
) -> tuple[str, dict[str, Any]]:
    """Score every configured variant; the fastest one within the accuracy budget wins."""
    from lmchain.serve import variants

    texts = [r["text"] for r in test]
    gold = [r["label"] for r in test]
    probe = texts[:200]
    report: dict[str, Any] = {}
    for name in dict.fromkeys(["fp32", *cfg.variants]):  # fp32 first: it is the reference
        predictor = variants.load(
            folder,
            name,
            max_length=cfg.service.max_length,
            batch_size=cfg.service.model_batch_size,
            threads=cfg.service.threads,
            cache=cache,
        )
        preds = predictor.predict(texts)
        accuracy = sum(p["label_id"] == g for p, g in zip(preds, gold)) / max(1, len(gold))
        predictor.predict(probe[:5])
        times, single = [], []
        for t in probe:
            t0 = time.perf_counter()
            single.append(predictor.predict([t])[0]["label"])
            times.append(1000 * (time.perf_counter() - t0))
        # The labels the infra validation expects come from one-text calls, as its requests are:
        # int8 quantises activations per batch, so a borderline text can flip with its batch-mates.
        report[name] = {
            "accuracy": round(accuracy, 5),
            "latency_ms_p50": round(statistics.median(times), 3),
            "labels": single,
        }
        del predictor
    base = report["fp32"]["accuracy"]
    for variant_name, r in report.items():
        r["accuracy_drop"] = round(base - r["accuracy"], 5)
        r["kept"] = variant_name in cfg.variants and r["accuracy_drop"] <= cfg.max_accuracy_drop + 1e-12
    kept = [n for n, r in report.items() if r["kept"]]
    if not kept:
        raise DeployFailed(
            f"no serving variant of {cfg.variants} stays within {cfg.max_accuracy_drop} of fp32 "
            f"accuracy {base}: " + ", ".join(f"{n} {r['accuracy']}" for n, r in report.items())
        )
    return min(kept, key=lambda n: report[n]["latency_ms_p50"]), report


# --------------------------------------------------------------------------- infra validation


def _keep_tail(stream: IO[str] | None, output: deque[str]) -> None:
    """Keep the last lines of the candidate service's output, for the error if it fails."""
    for line in stream or ():
        output.append(line.rstrip())


def _serve_command(cfg: DeployConfig, model_uri: str, variant: str, port: int) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "lmchain.cli",
        "serve",
        "--model-uri",
        model_uri,
        "--variant",
        variant,
        "--host",
        cfg.host,
        "--port",
        str(port),
    ]
    # Every service setting is passed explicitly: the candidate runs exactly this stage's config.
    for key, value in cfg.service.model_dump().items():
        if key not in ("host", "port", "variant"):
            cmd += ["--set", f"deploy.service.{key}={json.dumps(value)}"]
    cmd += ["--set", "deploy.service.follow_alias_s=0"]  # a pinned version: nothing to follow
    return cmd


def infra_validate(
    cfg: DeployConfig,
    ctx: RunContext,
    model_uri: str,
    variant: str,
    smoke_texts: list[str],
    probe: list[str],
    expected: list[str],
) -> dict[str, Any]:
    from lmchain.serve.auth import ApiKeys, new_key

    port = free_port(cfg.host)
    base = f"http://{cfg.host}:{port}"
    env = {**os.environ, **ctx.home.env()}  # the candidate serves from this run's home and registry
    headers: dict[str, str] = {}
    if ApiKeys.load(cfg.service.api_keys_file).enabled:
        # A one-off key known only to this validation, added to the candidate's key set.
        key, line = new_key()
        env["LMCHAIN_API_KEY_HASHES"] = ",".join(filter(None, [os.environ.get("LMCHAIN_API_KEY_HASHES"), line]))
        headers = {"X-API-Key": key}
    output: deque[str] = deque(maxlen=50)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        _serve_command(cfg, model_uri, variant, port),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    threading.Thread(target=_keep_tail, args=(proc.stdout, output), daemon=True).start()
    try:
        ready = wait_ready(base, proc, cfg.ready_timeout_s, output)
        ready_s = time.perf_counter() - t0
        smoke = post_json(base + "/v1/predict", {"texts": smoke_texts}, headers=headers)
        if len(smoke.get("predictions", [])) != len(smoke_texts):
            raise DeployFailed(
                f"service returned {len(smoke.get('predictions', []))} predictions for {len(smoke_texts)} texts"
            )
        latencies, served = [], []
        for i in range(cfg.latency_probe_requests):
            text = probe[i % len(probe)]
            t1 = time.perf_counter()
            answer = post_json(base + "/v1/predict", {"texts": [text]}, headers=headers)
            latencies.append(1000 * (time.perf_counter() - t1))
            served.append(answer["predictions"][0]["label"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    n = min(len(served), len(expected))
    mismatches = sum(a != b for a, b in zip(served[:n], expected[:n]))
    result = {
        "ready": ready,
        "ready_seconds": round(ready_s, 2),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(p95, 2),
        "slo_p95_ms": cfg.p95_slo_ms,
        "probe_requests": len(latencies),
        "label_mismatches": mismatches,
        "smoke": smoke,
    }
    if mismatches:
        raise DeployFailed(
            f"the candidate server's labels differ from the measured model on {mismatches} of "
            f"{n} probe texts ({variant})"
        )
    if p95 > cfg.p95_slo_ms:
        raise DeployFailed(
            f"infra validation failed: p95 latency {p95:.1f} ms over {len(latencies)} requests "
            f"exceeds deploy.p95_slo_ms={cfg.p95_slo_ms}"
        )
    return result
