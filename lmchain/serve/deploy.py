"""Deploy: start the service on the champion in a fresh process and smoke-test it.

The stage proves that what the registry now serves as champion loads and answers: it runs
``lmchain serve`` on a free local port, waits for ``/readyz``, sends the configured texts to
``/v1/predict``, checks one prediction per text, and stops the process. The record of the
deployment (model URI, version, answers) goes to the manifest and to
``LMCHAIN_HOME/deployments/current.json``, which ``lmchain up`` and the UI links read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque

from lmchain.artifacts import Manifest, RunContext, StageOutput, write_json
from lmchain.config import DeployConfig
from lmchain.errors import LmchainError
from lmchain.netutil import free_port


class DeployFailed(LmchainError):
    """The service did not come up or answered wrongly."""


def _get(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def post_json(url: str, payload: dict, timeout: float = 60.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float, output: deque) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployFailed(f"service exited with {proc.returncode} before it was ready: "
                               + " | ".join(list(output)[-5:]))
        try:
            status, body = _get(base + "/readyz", timeout=2)
            if status == 200:
                return body
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise DeployFailed(f"service not ready after {timeout_s}s; raise deploy.ready_timeout_s")


def run(cfg: DeployConfig, ctx: RunContext, inputs: dict) -> Manifest:
    reg = inputs["register"]
    model_uri = reg["outputs"]["champion_uri"]
    port = free_port(cfg.host)
    base = f"http://{cfg.host}:{port}"
    cmd = [sys.executable, "-m", "lmchain.cli", "serve", "--host", cfg.host, "--port", str(port),
           "--model-uri", model_uri]
    env = {**os.environ, "LMCHAIN_HOME": str(ctx.home)}
    output: deque[str] = deque(maxlen=50)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=lambda: [output.append(l.rstrip()) for l in proc.stdout], daemon=True).start()
    try:
        ready = wait_ready(base, proc, cfg.ready_timeout_s, output)
        ready_s = time.perf_counter() - t0
        answer = post_json(base + "/v1/predict", {"texts": cfg.smoke_texts})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    preds = answer.get("predictions", [])
    if len(preds) != len(cfg.smoke_texts):
        raise DeployFailed(f"service returned {len(preds)} predictions for {len(cfg.smoke_texts)} texts")

    record = {"model_uri": model_uri, "model": answer["model"], "version": answer["version"],
              "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run_id": ctx.run_id,
              "smoke": [{"text": t, **p} for t, p in zip(cfg.smoke_texts, preds)]}
    with StageOutput(ctx, "deploy", dataclasses.asdict(cfg)) as out:
        write_json(out.output("smoke", "smoke.json"), record)
        out.manifest.inputs = {"model_uri": model_uri}
        out.manifest.counts = {"smoke_texts": len(preds)}
        out.manifest.metrics = {"ready_seconds": round(ready_s, 2)}
        out.manifest.info = {"version": answer["version"], "model": answer["model"], "ready": ready,
                             "predictions": [p["label"] for p in preds]}
    write_json(ctx.home / "deployments" / "current.json", record)
    return out.manifest
