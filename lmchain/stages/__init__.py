"""The stage registry: one module per DAG task, named as the task, in the order they run.

Every stage module declares, at its top:

- ``CONFIG``: the recipe section its ``run`` takes (``None``: the whole recipe);
- ``READS``: the tasks whose manifests it takes as ``inputs`` (``inputs[name]``; a stage that
  passes another's outputs through says which name it is read as, in ``READ_AS``);
- ``ASSETS``: the names of the Airflow assets (:mod:`lmchain.assets`) its task emits;

and holds ``run(config, ctx, inputs) -> Manifest``: what the DAG task, ``lmchain run`` and the
tests all call, through :func:`lmchain.stages.runner.run_stage`. A stage with more than one task
(``finetune``: its search's trials) has one function per extra task, named ``<stage>_<function>``
as a task (``finetune.trials`` is ``finetune_trials``).

Importing this package is cheap (the DAG files do it at parse time): stage modules import their
domain packages (``lmchain.curate``, ``lmchain.train``, ...) and ML libraries inside ``run``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable

from lmchain.stages import (
    annotate,
    collect,
    curate,
    deploy,
    evaluate,
    finetune,
    gate,
    gate_labels,
    pretrain,
    register,
    review_queue,
)
from lmchain.stages.feedback import decide, export, merge
from lmchain.stages.feedback import gate as feedback_gate

# lmchain_pipeline, in the order `lmchain run` runs them (an order the DAG's dependencies allow).
PIPELINE: tuple[ModuleType, ...] = (
    collect,
    curate,
    gate,
    annotate,
    review_queue,
    gate_labels,
    pretrain,
    finetune,
    evaluate,
    register,
    deploy,
)
# lmchain_feedback.
FEEDBACK: tuple[ModuleType, ...] = (export, feedback_gate, merge, decide)


def name(stage: ModuleType) -> str:
    """The stage's task id: its module's name."""
    return stage.__name__.rsplit(".", 1)[-1]


# The pipeline's stage names (the CLI's --stages, the form's stop_after, lineage, summaries).
STAGES: tuple[str, ...] = tuple(name(m) for m in PIPELINE)


def dag_of(stage: ModuleType) -> tuple[ModuleType, ...]:
    """The stages of the DAG ``stage`` belongs to."""
    return FEEDBACK if stage in FEEDBACK else PIPELINE


def module_of(fn: Callable) -> ModuleType:
    """The stage module of ``fn`` (a stage's ``run``, or another of its task functions)."""
    import sys

    module = sys.modules.get(getattr(fn, "__module__", ""))
    if module not in PIPELINE and module not in FEEDBACK:
        raise ValueError(f"{fn!r} is not a function of a stage module in lmchain.stages")
    return module


def task_id(fn: Callable) -> str:
    """The DAG task that calls ``fn``: the stage's name for its ``run``, else ``<stage>_<function>``."""
    stage = name(module_of(fn))
    return stage if fn.__name__ == "run" else f"{stage}_{fn.__name__}"


def by_name(stage: str, dag: tuple[ModuleType, ...] = PIPELINE) -> ModuleType:
    for module in dag:
        if name(module) == stage:
            return module
    raise KeyError(f"no stage '{stage}'; stages are: {', '.join(name(m) for m in dag)}")
