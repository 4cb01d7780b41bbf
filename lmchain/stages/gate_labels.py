"""The ``gate_labels`` stage: the labelled splits through the suite ``labelled`` (label set,
class balance, train/test overlap, label shift against the last accepted labelled set; for
``task: ner``: valid spans, entity types in the set, each type's share, train/test overlap).

It passes the annotate stage's outputs through, so the stages after it read its manifest as
their ``annotate`` input (``READ_AS``): a split that did not pass this gate cannot reach them.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmchain.artifacts import Manifest, RunContext
from lmchain.config import GateConfig

CONFIG = "gate"
READS = ("annotate",)
ASSETS = ("lmchain_labelled_set",)
READ_AS = "annotate"


def run(cfg: GateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    from lmchain.quality.batches import SPLITS, labelled_frame
    from lmchain.quality.checks import check

    outputs = inputs["annotate"]["outputs"]
    files = {s: outputs[s] for s in SPLITS}
    labels = json.loads(Path(outputs["labels"]).read_text())
    batch = {"labelled": (labelled_frame(files), [Path(f) for f in files.values()])}
    # labels.json says what the splits hold: task ner (annotate.entity_types) checks spans instead of labels.
    task = labels.get("task", "classification")
    return check(ctx, "gate_labels", cfg, batch, labels["names"], passthrough=dict(outputs), task=task)
