"""Gate on the labelled splits (suite ``labelled``): label set, class balance, train/test
overlap, label shift against the last accepted labelled set."""

from __future__ import annotations

import json
from pathlib import Path

from lmchain.artifacts import Manifest, RunContext
from lmchain.config import GateConfig
from lmchain.quality import check
from lmchain.quality.batches import SPLITS, labelled_frame


def run(cfg: GateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    outputs = inputs["annotate"]["outputs"]
    files = {s: outputs[s] for s in SPLITS}
    names = json.loads(Path(outputs["labels"]).read_text())["names"]
    batch = {"labelled": (labelled_frame(files), [Path(f) for f in files.values()])}
    return check(ctx, "gate_labels", cfg, batch, names, passthrough=dict(outputs))
