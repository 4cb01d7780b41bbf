"""The chain: which function runs each stage and which upstream manifests it reads.

:func:`run_stage` is the one entry point used by the Airflow tasks, the CLI and the tests. It
imports the stage's module only when called, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from lmchain import STAGES
from lmchain.artifacts import RunContext, home, sha256_text
from lmchain.config import PipelineConfig

MODULES = {
    "collect": "lmchain.collect",
    "curate": "lmchain.curate",
    "gate": "lmchain.quality",
    "annotate": "lmchain.annotate",
    "review_queue": "lmchain.annotate.queue",
    "gate_labels": "lmchain.quality.labels",
    "pretrain": "lmchain.train.pretrain",
    "finetune": "lmchain.train.finetune",
    "evaluate": "lmchain.evaluate",
    "register": "lmchain.register",
    "deploy": "lmchain.serve.deploy",
}

# What each stage reads. Stages after a gate read the gate's manifest, which passes the
# validated files through, so nothing downstream can bypass a gate. Pretrain reads the labelled
# splits to keep evaluation text out of its corpus.
CONFIG_SECTION = {"gate_labels": "gate", "review_queue": "annotate"}
# The labelled-set gate passes the splits through, so stages read it as their "annotate" input.
INPUT_NAME = {"gate_labels": "annotate"}
UPSTREAM: dict[str, tuple[str, ...]] = {
    "collect": (),
    "curate": ("collect",),
    "gate": ("collect", "curate"),
    "annotate": ("gate",),
    "review_queue": ("annotate",),
    "gate_labels": ("annotate",),
    "pretrain": ("gate", "gate_labels"),
    "finetune": ("pretrain", "gate_labels"),
    "evaluate": ("finetune", "gate_labels"),
    "register": ("finetune", "evaluate"),
    "deploy": ("register", "gate_labels"),
}


def config_hash(cfg: PipelineConfig) -> str:
    return sha256_text(json.dumps(cfg.to_dict(), sort_keys=True, default=str))


def run_stage(stage: str, cfg: PipelineConfig, run_id: str, upstream: dict[str, dict[str, Any]],
              lmchain_home: Path | None = None, entry: str = "run", **kwargs: Any) -> dict[str, Any]:
    """Run one stage and return its manifest as a dict (what goes to XCom).

    ``entry`` picks another function of the stage's module with the same arguments plus
    ``kwargs``: the fine-tune search's mapped tasks call ``run_trial(index=i)`` and ``select(trials=...)``.
    """
    missing = [u for u in UPSTREAM[stage] if u not in upstream]
    if missing:
        raise ValueError(f"stage {stage} needs the manifests of {missing}")
    module = importlib.import_module(MODULES[stage])
    ctx = RunContext(run_id, home=lmchain_home or home(), experiment=cfg.register.experiment,
                     model_name=cfg.register.model_name, config_hash=config_hash(cfg))
    if stage in ("collect", "annotate"):  # users' corrections join the corpus and the labels
        from lmchain.feedback.stages import with_feedback_labels

        cfg = with_feedback_labels(cfg, ctx.home)
    section = getattr(cfg, CONFIG_SECTION.get(stage, stage))
    inputs = {INPUT_NAME.get(u, u): upstream[u] for u in UPSTREAM[stage]}
    if entry == "select":  # reads only the trials' manifests
        return module.select(section, ctx, **kwargs).to_dict()
    return getattr(module, entry)(section, ctx, inputs, **kwargs).to_dict()


def finetune_trials(cfg: PipelineConfig) -> list[int]:
    """Indices of the fine-tune search's trials ([0]: one plain fine-tune); the map of the trial tasks."""
    from lmchain.train.hpsearch import trial_count

    return list(range(trial_count(cfg.finetune.search)))


def run_all(cfg: PipelineConfig, run_id: str, stages: tuple[str, ...] = STAGES,
            lmchain_home: Path | None = None) -> dict[str, dict[str, Any]]:
    """Run stages in order in this process (no Airflow): for the CLI's `lmchain run`."""
    from lmchain.artifacts import Manifest

    ctx = RunContext(run_id, home=lmchain_home or home())
    done: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        if stage in stages:
            done[stage] = run_stage(stage, cfg, run_id, done, lmchain_home)
        elif (ctx.stage_dir(stage) / "manifest.json").is_file():
            done[stage] = Manifest.read(ctx.stage_dir(stage)).to_dict()  # reuse an earlier run's output
    return done
