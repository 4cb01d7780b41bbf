"""The one runner of both DAGs' stages: the DAG tasks (:mod:`lmchain.airflow_tasks`), ``lmchain
run`` and the tests call a stage through :func:`run_stage`.

It checks the stage's inputs (the manifests its ``READS`` names, none of them blocked), builds
the run's context, picks the stage's config section and calls the stage's function with them.
:func:`run_all` runs the pipeline's stages in order in this process, reusing the outputs of
stages not asked for, but never past a blocked gate.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable

from lmchain.artifacts import BLOCKED, MANIFEST, Manifest, RunContext, sha256_text
from lmchain.config import PipelineConfig
from lmchain.errors import GateFailed
from lmchain.home import Home
from lmchain.stages import PIPELINE, STAGES, by_name, dag_of, module_of, name, task_id


def config_hash(cfg: PipelineConfig) -> str:
    return sha256_text(json.dumps(cfg.to_dict(), sort_keys=True, default=str))


def reads(fn: Callable) -> tuple[str, ...]:
    """The tasks whose manifests ``fn`` takes: its stage's ``READS``, unless ``fn`` says otherwise
    (``finetune.trials`` needs none)."""
    return getattr(fn, "reads", module_of(fn).READS)


def extra_parameters(fn: Callable) -> list[str]:
    """What ``fn`` takes after (config, ctx, inputs): ``index`` of a mapped trial, ``trials``."""
    return list(inspect.signature(fn).parameters)[3:]


def run_stage(
    fn: Callable,
    cfg: PipelineConfig,
    run_id: str,
    upstream: dict[str, dict[str, Any]],
    lmchain_home: Home | Path | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``fn`` (a stage's ``run``, or another of its task functions) for run ``run_id``; returns
    its manifest as a dict (what goes to XCom), or what else it returns (``finetune.trials``).

    ``upstream``: manifests by task id; those the stage reads must be there and not blocked.
    ``kwargs``: the function's own arguments after ``inputs`` (``index=``, ``trials=``).
    """
    module = module_of(fn)
    needed = reads(fn)
    missing = [u for u in needed if u not in upstream]
    if missing:
        raise ValueError(f"stage {task_id(fn)} needs the manifests of {missing}")
    ctx = RunContext(
        run_id,
        home=Home.of(lmchain_home),
        experiment=cfg.register.experiment,
        model_name=cfg.register.model_name,
        config_hash=config_hash(cfg),
    )
    for u in needed:
        if upstream[u].get("status") == BLOCKED:
            raise GateFailed(blocked_message(task_id(fn), u, upstream[u], ctx))
    if getattr(module, "READS_FEEDBACK_LABELS", False):  # users' corrections join the corpus and labels
        from lmchain.feedback import with_feedback_labels

        cfg = with_feedback_labels(cfg, ctx.home)
    section = cfg if module.CONFIG is None else getattr(cfg, module.CONFIG)
    dag = dag_of(module)
    inputs = {getattr(by_name(u, dag), "READ_AS", u): upstream[u] for u in needed}
    result = fn(section, ctx, inputs, **kwargs)
    return result.to_dict() if isinstance(result, Manifest) else result


def blocked_message(stage: str, gate: str, manifest: dict[str, Any], ctx: RunContext) -> str:
    suites = sorted((manifest.get("info") or {}).get("quarantine") or {}) or ["SUITE"]
    return (
        f"{stage} cannot run: the {gate} stage of run {ctx.run_id} is blocked (status 'blocked' in "
        f"{ctx.stage_dir(gate) / MANIFEST}), and nothing runs on a blocked gate's output. Fix the data or the "
        f"gate.* thresholds, or release the batch with `lmchain gate --accept {ctx.run_id} --suite {suites[0]} "
        f"--reason ...`; then run the gate again (`lmchain run --run-id {ctx.run_id} --stages {gate},...`)"
    )


def run_all(
    cfg: PipelineConfig, run_id: str, stages: tuple[str, ...] = STAGES, lmchain_home: Home | Path | None = None
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order in this process (no Airflow): for the CLI's ``lmchain run``.

    A stage not asked for is taken from an earlier run of ``run_id`` when its folder holds a
    manifest. Nothing is reused past a blocked gate: a stage asked for that depends, directly or
    through reused outputs, on a blocked manifest stops with :class:`GateFailed`.
    """
    lmchain_home = Home.of(lmchain_home)
    ctx = RunContext(run_id, home=lmchain_home)
    done: dict[str, dict[str, Any]] = {}
    stopped: dict[str, str] = {}  # reused stage -> the blocked gate its output came through
    for module in PIPELINE:
        stage = name(module)
        gate = next(
            (stopped.get(u) or u for u in module.READS if u in stopped or done.get(u, {}).get("status") == BLOCKED),
            None,
        )
        if stage in stages:
            if gate is not None:
                raise GateFailed(blocked_message(stage, gate, done[gate], ctx))
            done[stage] = run_stage(module.run, cfg, run_id, done, lmchain_home)
        elif (ctx.stage_dir(stage) / MANIFEST).is_file():
            done[stage] = Manifest.read(ctx.stage_dir(stage)).to_dict()  # reuse an earlier run's output
            if gate is not None:
                stopped[stage] = gate
    return done
