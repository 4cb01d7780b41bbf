"""The ``gate`` stage: the collected records (suite ``raw``) and the curated corpus (suite
``curated``) through Great Expectations checkpoints.

A batch that fails a critical expectation is quarantined, the manifest is published with
``status: blocked`` (the evidence) and the stage raises :class:`~lmchain.errors.GateFailed`, so
nothing downstream runs on it (see :mod:`lmchain.quality.checks`). A batch that passes goes on:
the manifest passes the curated records through as its ``records`` output, so downstream stages
read them through the gate and cannot bypass it.
"""

from __future__ import annotations

from pathlib import Path

from lmchain.artifacts import Manifest, RunContext
from lmchain.config import GateConfig

CONFIG = "gate"
READS = ("collect", "curate")
ASSETS = ("lmchain_curated_corpus",)


def run(cfg: GateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    from lmchain.quality.batches import records_frame
    from lmchain.quality.checks import check

    collected = inputs["collect"]["outputs"]["records"]
    curated = inputs["curate"]["outputs"]["records"]
    batches = {
        "raw": (records_frame(collected), [Path(collected)]),
        "curated": (records_frame(curated), [Path(curated)]),
    }
    return check(ctx, "gate", cfg, batches, [], {"records": curated})
