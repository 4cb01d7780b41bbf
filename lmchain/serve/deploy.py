"""Deploy: pick the serving variant, validate the candidate in a real server, then move the alias.

The candidate is the version the register stage just registered when evaluation decided to
promote it, else the current champion (re-validated, since the serving stack may have changed).

1. Variant: each configured variant (fp32 PyTorch, ONNX Runtime fp32, ONNX Runtime int8) is
   scored on the test split; a variant is kept only if its accuracy is within
   ``max_accuracy_drop`` of fp32, and the fastest kept one (single-text latency) is tagged on
   the version as ``lmchain.serving_variant``, which ``lmchain serve --variant auto`` reads.
2. Infra validation: ``lmchain serve`` runs the candidate in a fresh process on a free port; the
   stage waits for ``/readyz``, sends the smoke texts, then times ``latency_probe_requests``
   single-text requests and checks their p95 against ``p95_slo_ms``; the served labels must
   equal the in-process labels of the same variant.
3. Only then is the candidate tagged ``lmchain.validated`` (an HMAC with the deploy key over the
   version's identity, the run and the time: see ``registry.mark_validated``) and ``champion``
   moved to it. Any failure raises, so the old champion keeps serving (a running service follows
   the alias and hot-swaps on its own, onto validated versions only).
"""

from __future__ import annotations

import dataclasses
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
from typing import Any

from lmchain import registry
from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, write_json
from lmchain.config import DeployConfig
from lmchain.errors import LmchainError
from lmchain.netutil import free_port
from lmchain.serve.slot import VARIANT_TAG

CHAMPION = "champion"


class DeployFailed(LmchainError):
    """The candidate did not pass infra validation; the alias was not moved."""


# --------------------------------------------------------------------------- HTTP helpers


def _request(url: str, payload: dict | None = None, timeout: float = 60.0,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json", **(headers or {})})
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
            raise DeployFailed(f"service exited with {proc.returncode} before it was ready: "
                               + " | ".join(list(output)[-5:]))
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


def choose_variant(folder: Path, test: list[dict], cfg: DeployConfig) -> tuple[str, dict[str, Any]]:
    """Score every configured variant; the fastest one within the accuracy budget wins."""
    from lmchain.serve import variants

    texts = [r["text"] for r in test]
    gold = [r["label"] for r in test]
    probe = texts[:200]
    report: dict[str, Any] = {}
    for name in dict.fromkeys(["fp32", *cfg.variants]):  # fp32 first: it is the reference
        predictor = variants.load(folder, name, max_length=cfg.service.max_length,
                                  batch_size=cfg.service.model_batch_size, threads=cfg.service.threads)
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
        report[name] = {"accuracy": round(accuracy, 5), "latency_ms_p50": round(statistics.median(times), 3),
                        "labels": single}
        del predictor
    base = report["fp32"]["accuracy"]
    for name, r in report.items():
        r["accuracy_drop"] = round(base - r["accuracy"], 5)
        r["kept"] = name in cfg.variants and r["accuracy_drop"] <= cfg.max_accuracy_drop + 1e-12
    kept = [n for n, r in report.items() if r["kept"]]
    if not kept:
        raise DeployFailed(f"no serving variant of {cfg.variants} stays within {cfg.max_accuracy_drop} of fp32 "
                           f"accuracy {base}: " + ", ".join(f"{n} {r['accuracy']}" for n, r in report.items()))
    return min(kept, key=lambda n: report[n]["latency_ms_p50"]), report


# --------------------------------------------------------------------------- infra validation


def _serve_command(cfg: DeployConfig, model_uri: str, variant: str, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "lmchain.cli", "serve", "--model-uri", model_uri, "--variant", variant,
           "--host", cfg.host, "--port", str(port)]
    # Every service setting is passed explicitly: the candidate runs exactly this stage's config.
    for key, value in dataclasses.asdict(cfg.service).items():
        if key not in ("host", "port", "variant"):
            cmd += ["--set", f"deploy.service.{key}={json.dumps(value)}"]
    cmd += ["--set", "deploy.service.follow_alias_s=0"]  # a pinned version: nothing to follow
    return cmd


def infra_validate(cfg: DeployConfig, ctx: RunContext, model_uri: str, variant: str,
                   probe: list[str], expected: list[str]) -> dict[str, Any]:
    from lmchain.serve.auth import ApiKeys, new_key

    port = free_port(cfg.host)
    base = f"http://{cfg.host}:{port}"
    env = {**os.environ, "LMCHAIN_HOME": str(ctx.home)}
    headers: dict[str, str] = {}
    if ApiKeys.load(cfg.service.api_keys_file).enabled:
        # A one-off key known only to this validation, added to the candidate's key set.
        key, line = new_key()
        env["LMCHAIN_API_KEY_HASHES"] = ",".join(filter(None, [os.environ.get("LMCHAIN_API_KEY_HASHES"), line]))
        headers = {"X-API-Key": key}
    output: deque[str] = deque(maxlen=50)
    t0 = time.perf_counter()
    proc = subprocess.Popen(_serve_command(cfg, model_uri, variant, port), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=lambda: [output.append(l.rstrip()) for l in proc.stdout], daemon=True).start()
    try:
        ready = wait_ready(base, proc, cfg.ready_timeout_s, output)
        ready_s = time.perf_counter() - t0
        smoke = post_json(base + "/v1/predict", {"texts": cfg.smoke_texts}, headers=headers)
        if len(smoke.get("predictions", [])) != len(cfg.smoke_texts):
            raise DeployFailed(f"service returned {len(smoke.get('predictions', []))} predictions for "
                               f"{len(cfg.smoke_texts)} texts")
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
    result = {"ready": ready, "ready_seconds": round(ready_s, 2), "p50_ms": round(statistics.median(latencies), 2),
              "p95_ms": round(p95, 2), "slo_p95_ms": cfg.p95_slo_ms, "probe_requests": len(latencies),
              "label_mismatches": mismatches, "smoke": smoke}
    if mismatches:
        raise DeployFailed(f"the candidate server's labels differ from the measured model on {mismatches} of "
                           f"{n} probe texts ({variant})")
    if p95 > cfg.p95_slo_ms:
        raise DeployFailed(f"infra validation failed: p95 latency {p95:.1f} ms over {len(latencies)} requests "
                           f"exceeds deploy.p95_slo_ms={cfg.p95_slo_ms}")
    return result


# --------------------------------------------------------------------------- the stage


def run(cfg: DeployConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import mlflow

    reg = inputs["register"]["info"]
    name = reg["model_name"]
    client = registry.client()
    previous = registry.champion(name, CHAMPION)
    promote = bool(reg["promoted"])
    candidate = str(reg["version"]) if promote else (str(previous.version) if previous else None)
    if candidate is None:
        raise DeployFailed(f"nothing to deploy: version {reg['version']} was not promoted and {name} has no "
                           "champion yet")
    model_uri = f"models:/{name}/{candidate}"
    folder = registry.local_model(model_uri)

    test = list(read_jsonl(inputs["annotate"]["outputs"]["test"]))[:cfg.variant_eval_examples]
    tags = client.get_model_version(name, candidate).tags or {}
    report = json.loads(tags["lmchain.variant_report"]) if "lmchain.variant_report" in tags else None
    if report is None or tags.get(VARIANT_TAG) not in cfg.variants:
        variant, report = choose_variant(folder, test, cfg)
        client.set_model_version_tag(name, candidate, VARIANT_TAG, variant)
        client.set_model_version_tag(name, candidate, "lmchain.variant_report", json.dumps(
            {n: {k: v for k, v in r.items() if k != "labels"} for n, r in report.items()}))
    else:
        variant = tags[VARIANT_TAG]
        report = {n: {**r, "labels": None} for n, r in report.items()}
    expected = (report[variant].get("labels") or [])
    probe = [r["text"] for r in test[:200]] or cfg.smoke_texts

    validation = infra_validate(cfg, ctx, model_uri, variant, probe, expected)
    # Tag first: a service that sees the alias move must find the tag already there.
    validated = registry.mark_validated(name, candidate, pipeline_run=ctx.run_id)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, candidate)

    summary = {n: {k: v for k, v in r.items() if k != "labels"} for n, r in report.items()}
    record = {"model_uri": f"models:/{name}@{CHAMPION}", "model": name, "version": candidate, "variant": variant,
              "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run_id": ctx.run_id,
              "promoted": promote, "previous_champion": str(previous.version) if previous else None,
              "validated": {k: v for k, v in validated.items() if k != "hmac"},
              "smoke": [{"text": t, **p} for t, p in zip(cfg.smoke_texts, validation["smoke"]["predictions"])]}
    with registry.stage_run(ctx, ctx.experiment, "deploy"):
        mlflow.log_dict({"variants": summary, "chosen": variant, **{k: v for k, v in validation.items()
                                                                    if k != "smoke"}}, "deploy/validation.json")
        mlflow.log_metrics({"p95_ms": validation["p95_ms"], "p50_ms": validation["p50_ms"],
                            "ready_seconds": validation["ready_seconds"]})
    with StageOutput(ctx, "deploy", dataclasses.asdict(cfg)) as out:
        write_json(out.output("smoke", "smoke.json"), record)
        write_json(out.output("validation", "validation.json"), {"variants": summary, "chosen": variant,
                                                                  **validation})
        out.manifest.inputs = {"model_uri": model_uri}
        out.manifest.counts = {"smoke_texts": len(cfg.smoke_texts), "probe_requests": validation["probe_requests"]}
        out.manifest.metrics = {"ready_seconds": validation["ready_seconds"], "p50_ms": validation["p50_ms"],
                                "p95_ms": validation["p95_ms"],
                                **{f"accuracy_{n.replace('-', '_')}": r["accuracy"] for n, r in summary.items()}}
        out.manifest.info = {"version": candidate, "model": name, "variant": variant, "promoted": promote,
                             "previous_champion": record["previous_champion"], "ready": validation["ready"],
                             "predictions": [p["label"] for p in validation["smoke"]["predictions"]]}
    write_json(ctx.home / "deployments" / "current.json", record)
    return out.manifest
