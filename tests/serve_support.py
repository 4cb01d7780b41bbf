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
