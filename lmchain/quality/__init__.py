"""Gate: a Great Expectations checkpoint on the curated corpus.

The GX project lives in ``LMCHAIN_HOME/gx`` (file mode), so suites, checkpoints, validation
results and the Data Docs site persist between runs and can be opened by people. When an
expectation fails, the stage still publishes its output (the validation summary is the
evidence) and then raises :class:`GateFailed`, which fails the Airflow task so that nothing
downstream runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmchain.artifacts import Manifest, RunContext, StageOutput, write_json
from lmchain.config import GateConfig
from lmchain.errors import GateFailed

SUITE = "curated"


def data_docs_dir(home: Path) -> Path:
    """The static Data Docs site that the gate's checkpoint rebuilds."""
    return home / "gx" / "uncommitted" / "data_docs" / "local_site"


def _expectations(cfg: GateConfig) -> list:
    import great_expectations as gx

    E = gx.expectations
    return [
        E.ExpectTableColumnsToMatchSet(column_set=["id", "text", "chars", "source"], exact_match=False),
        E.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows),
        E.ExpectColumnValuesToNotBeNull(column="text"),
        E.ExpectColumnValuesToBeUnique(column="id"),
        E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=cfg.min_chars, max_value=cfg.max_chars),
        E.ExpectColumnMeanToBeBetween(column="chars", min_value=0, max_value=cfg.max_mean_chars),
    ]


def _checkpoint(context, cfg: GateConfig):
    """Create or update the datasource, suite, validation definition and checkpoint."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas(name="lmchain")
    try:
        asset = source.get_asset("curated")
    except LookupError:
        asset = source.add_dataframe_asset(name="curated")
    try:
        batch_def = asset.get_batch_definition("whole")
    except (LookupError, KeyError):
        batch_def = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=SUITE, expectations=_expectations(cfg)))
    vdef = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{SUITE}_vd", data=batch_def, suite=suite))
    return context.checkpoints.add_or_update(gx.Checkpoint(
        name=f"{SUITE}_gate",
        validation_definitions=[vdef],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
        result_format={"result_format": "SUMMARY"},
    ))


def _failures(result) -> list[dict[str, Any]]:
    rows = []
    for vres in result.run_results.values():
        for r in vres.results:
            res = r.result or {}
            rows.append({
                "expectation": r.expectation_config.type,
                "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
                "success": bool(r.success),
                "observed": res.get("observed_value", res.get("unexpected_count")),
            })
    return rows


def run(cfg: GateConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import great_expectations as gx
    import pandas as pd

    source = inputs["curate"]["outputs"]["records"]
    df = pd.read_json(source, lines=True, dtype={"id": str, "text": str})
    if df.empty:
        df = pd.DataFrame({"id": pd.Series(dtype=str), "text": pd.Series(dtype=str),
                           "source": pd.Series(dtype=str)})
    df["chars"] = df["text"].str.len()

    context = gx.get_context(mode="file", project_root_dir=str(ctx.home))  # -> <home>/gx/
    if context.variables.progress_bars is None or context.variables.progress_bars.globally:
        # Progress bars would flood the Airflow task log (and the CLI's stderr) per expectation.
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    checkpoint = _checkpoint(context, cfg)
    result = checkpoint.run(batch_parameters={"dataframe": df[["id", "text", "chars", "source"]]})
    checks = _failures(result)
    failed = [c for c in checks if not c["success"]]
    docs = context.get_docs_sites_urls()
    docs_url = docs[0]["site_url"] if docs else ""

    with StageOutput(ctx, "gate", dataclasses.asdict(cfg)) as out:
        out.manifest.inputs = {"records": source}
        # The gate passes the corpus through unchanged: downstream reads the validated file.
        out.manifest.outputs = {"records": source, "validation": str(out.final / "validation.json")}
        write_json(out.path("validation.json"), {"success": not failed, "checks": checks})
        out.manifest.counts = {"records": len(df), "expectations": len(checks), "failed": len(failed)}
        out.manifest.info = {"passed": not failed, "suite": SUITE, "data_docs": docs_url}
    if failed:
        lines = "; ".join(f"{c['expectation']}({c['kwargs']}) observed {c['observed']}" for c in failed)
        raise GateFailed(f"data-quality gate '{SUITE}' failed {len(failed)} of {len(checks)} expectations "
                         f"on {source}: {lines}. Fix the data or the gate.* thresholds; Data Docs: {docs_url}")
    return out.manifest
