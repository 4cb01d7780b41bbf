"""Helpers for service tests: a tiny classifier folder and a real uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from lmchain import registry
from lmchain.artifacts import RunContext
from lmchain.config import RegisterConfig
from lmchain.netutil import free_port
from lmchain.stages.register import run as register


def make_tiny_classifier(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from lmchain.train.models import TINY_BERT, packaged_minilm

    torch.manual_seed(seed)
    config = AutoConfig.for_model(**TINY_BERT, num_labels=2, id2label={0: "neg", 1: "pos"},
                                  label2id={"neg": 0, "pos": 1})
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(packaged_minilm()).save_pretrained(path)
    return path


def register_version(model_dir, run_id: str, accuracy: float = 0.5, *, name: str, promote: bool = True):
    """Register through the real register stage; returns its manifest."""
    ctx = RunContext(run_id, model_name=name)
    inputs = {"finetune": {"outputs": {"model": str(model_dir)}, "inputs": {"train": "t.jsonl", "base_model": "x"}},
              "evaluate": {"metrics": {"accuracy": accuracy, "macro_f1": accuracy},
                           "info": {"decision": {"promote": promote, "reason": f"test decision {promote}"}}}}
    return register(RegisterConfig(model_name=name), ctx, inputs)


def make_champion(name: str, version) -> None:
    """What the deploy stage does after a passed infra validation: tag the version, move the alias."""
    registry.mark_validated(name, str(version), pipeline_run="test")
    registry.client().set_registered_model_alias(name, "champion", str(version))


@contextlib.contextmanager
def running_server(app, ready_timeout: float = 120.0):
    """Serve ``app`` with uvicorn on a free port in a thread; yields the base URL once /readyz is 200."""
    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"server on {base} not ready")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_process(home: Path, *args: str, ready_timeout: float = 180.0, env: dict | None = None):
    """A real `lmchain serve` process on 127.0.0.1 and a free port; yields (base URL, Popen) once
    /readyz is 200. ``args`` follow `serve` (e.g. --model-dir, --set ...)."""
    import subprocess

    from conftest import REPO, lmchain_cmd, subprocess_env

    port = free_port("127.0.0.1")
    env = {**subprocess_env(home), **(env or {})}
    log_file = open(home / f"serve-{port}.log", "w+")
    proc = subprocess.Popen(lmchain_cmd("serve", "--host", "127.0.0.1", "--port", str(port), *args), cwd=REPO,
                            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log_file.seek(0)
                raise RuntimeError(f"lmchain serve on {base} not ready: {log_file.read()[-3000:]}")
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log_file.close()


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in a /metrics page (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def postgres_admin_url() -> str | None:
    import sqlalchemy as sa

    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    try:
        with sa.create_engine(url).connect() as conn:
            conn.execute(sa.text("select 1"))
        return url
    except Exception:
        return None


@contextlib.contextmanager
def throwaway_postgres():
    """A fresh PostgreSQL database on 127.0.0.1:5432 for one test; dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    name = "lmchain_t_" + uuid.uuid4().hex[:12]
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
