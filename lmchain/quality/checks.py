"""Validate a stage's batches, publish the evidence, block: what every gate stage shares.

The ``gate`` stage validates the collected records (suite ``raw``) and the curated corpus
(suite ``curated``); ``gate_labels`` validates the labelled splits (suite ``labelled``). Each
suite runs as a GX checkpoint in the project at ``<home>/gx`` that rebuilds the Data Docs
site. When a critical expectation fails, the batch is copied to
``<home>/quarantine/<run_id>/<suite>/`` with its failing rows (``failing_rows.jsonl``: each
row with the expectations it failed) and its validation result, the stage still publishes its
output (the evidence) with ``status: blocked`` in its manifest and then raises :class:`GateFailed`,
which fails the Airflow task so that nothing downstream runs; the runner refuses a blocked
manifest as an input and ``lmchain run --run-id`` never reuses past it. ``lmchain gate --accept``
releases a batch. An empty batch is blocked before any expectation runs. The feedback loop holds rows instead of batches
(:func:`lmchain.quality.gate.validate` with ``hold="rows"``).

What a gate publishes (validation.json, Data Docs, MLflow) holds counts, rates and row indices,
never a value from the batch; the rows themselves are in the quarantine, for the operator only.
"""

from __future__ import annotations

from typing import Callable

from lmchain.artifacts import BLOCKED, OK, Manifest, RunContext, StageOutput, write_json
from lmchain.config import GateConfig
from lmchain.errors import GateFailed
from lmchain.quality import data_docs_dir


def check(
    ctx: RunContext,
    stage: str,
    cfg: GateConfig,
    batches: dict,
    label_names: list[str],
    passthrough: dict[str, str],
    task: str = "classification",
) -> Manifest:
    """Validate ``batches`` ({suite: (dataframe, files)}); publish the evidence; raise if any is blocked.

    ``passthrough`` outputs are the validated files themselves: downstream stages read them
    through the gate's manifest, so they cannot bypass it. ``task``: what the labelled splits
    hold (``ner``: entity spans, ``label_names`` the entity types).
    """
    from lmchain.quality.gate import validate

    empty = [(suite, files) for suite, (df, files) in batches.items() if len(df) == 0]
    if empty:
        block_empty(ctx, stage, cfg, empty)
    results = [
        validate(ctx.home, ctx.run_id, suite, df, files, getattr(cfg, suite), label_names, task=task)
        for suite, (df, files) in batches.items()
    ]
    blocked = [r for r in results if not r.passed]
    manifest = publish(ctx, stage, cfg, results, passthrough, status=BLOCKED if blocked else OK)
    if blocked:
        details = " | ".join(
            f"suite '{r.suite}' failed {len(r.failed)} of {len(r.checks)} expectations: "
            f"{r.failure_text()}; batch quarantined in {r.quarantine} (failing rows: "
            f"failing_rows.jsonl)"
            for r in blocked
        )
        raise GateFailed(
            f"data-quality gate blocked run {ctx.run_id}: {details}. Fix the data or the gate.* "
            f"thresholds, or release it with `lmchain gate --accept {ctx.run_id} --suite "
            f"{blocked[0].suite} --reason ...`; Data Docs: {blocked[0].docs_url}"
        )
    return manifest


def block_empty(ctx: RunContext, stage: str, cfg: GateConfig, empty: list) -> None:
    """An empty batch: nothing to validate, and nothing downstream can use it. Say so and stop."""
    names = "; ".join(f"the {suite} batch {', '.join(map(str, files))}" for suite, files in empty)
    with StageOutput(ctx, stage, cfg.model_dump()) as out:
        out.manifest.counts = {f"{suite}_rows": 0 for suite, _ in empty}
        out.manifest.info = {"passed": False, "empty": [suite for suite, _ in empty]}
        out.manifest.status = BLOCKED
    raise GateFailed(
        f"data-quality gate blocked run {ctx.run_id}: {names} is empty (0 rows), so there is nothing "
        "to validate. Check the stage that wrote it (its manifest's counts and drop_reasons say "
        "where the records went)"
    )


def publish(
    ctx: RunContext,
    stage: str,
    cfg: GateConfig,
    results: list,
    passthrough: dict[str, str],
    info: dict | None = None,
    write: Callable[[StageOutput], None] | None = None,
    status: str = OK,
) -> Manifest:
    """The gate stage's evidence: validation.json and the manifest here, both and this run's
    Data Docs pages in MLflow. None of it holds a value from the batch (see the module doc).
    ``info`` joins the manifest's info; ``write`` adds the caller's own outputs to the stage;
    ``status`` is the manifest's (``blocked`` when the batch may not go on)."""
    import mlflow

    from lmchain import registry

    with StageOutput(ctx, stage, cfg.model_dump()) as out:
        write_json(out.output("gate_result", "validation.json"), {r.suite: r.to_dict() for r in results})
        out.manifest.outputs.update(passthrough)
        out.manifest.status = status
        out.manifest.counts = {
            **{f"{r.suite}_rows": r.rows for r in results},
            "expectations": sum(len(r.checks) for r in results),
            "failed": sum(len(r.failed) for r in results),
            "warnings": sum(len(r.warnings) for r in results),
        }
        out.manifest.info = {
            "passed": all(r.passed for r in results),
            "suites": [r.suite for r in results],
            "data_docs": results[0].docs_url if results else "",
            "quarantine": {r.suite: r.quarantine for r in results if r.quarantine},
            "accepted": {r.suite: r.accepted for r in results if r.accepted},
            "warnings": [
                f"{r.suite}: {w['expectation']} observed {w['observed']}" for r in results for w in r.warnings
            ],
            **(info or {}),
        }
        if write is not None:
            write(out)
        for w in out.manifest.info["warnings"]:
            print(f"[lmchain.gate warning] {w}", flush=True)
        with registry.stage_run(ctx, ctx.experiment, stage):
            mlflow.log_dict({r.suite: r.to_dict() for r in results}, f"{stage}/validation.json")
            # This run's Data Docs pages only: the site holds every run's pages and grows.
            for r in results:
                for page_dir in (data_docs_dir(ctx.home) / "validations" / r.suite).glob("*"):
                    if page_dir.name == ctx.run_id and page_dir.is_dir():
                        mlflow.log_artifacts(str(page_dir), f"{stage}/data_docs/{r.suite}")
    return out.manifest
