"""Lineage: from a registered model version back to the files and URLs it was made from.

Each stage's manifest names its inputs and the hashes of its outputs, and every manifest of a
run sits in the run's folder. The register stage copies the essentials onto the model version
as tags; ``lmchain lineage`` walks the manifests from the version's run folder back to collect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmchain.stages import STAGES
from lmchain.artifacts import Manifest, RunContext, code_version, sha256_text


def _manifests(run_dir: Path) -> dict[str, Manifest]:
    return {s: Manifest.read(run_dir / s) for s in STAGES if (run_dir / s / "manifest.json").is_file()}


def lineage_tags(ctx: RunContext) -> dict[str, str]:
    """Tags for a model version: data snapshots and hashes, labelled-set version, config, code, run."""
    m = _manifests(ctx.run_dir)
    tags = {
        "lineage.run_dir": str(ctx.run_dir),
        "lineage.config_hash": ctx.config_hash,
        "lineage.code_version": code_version(),
        "lineage.airflow.dag_id": os.environ.get("AIRFLOW_CTX_DAG_ID", "lmchain_pipeline (cli)"),
        "lineage.airflow.run_id": ctx.run_id,
    }
    if "collect" in m:
        tags["lineage.sources"] = "; ".join(m["collect"].inputs.values())[:5000]
        tags["lineage.collected.sha256"] = m["collect"].hashes.get("records", "")
    if "curate" in m:
        tags["lineage.curated.uri"] = m["curate"].outputs["records"]
        tags["lineage.curated.sha256"] = m["curate"].hashes.get("records", "")
    if "annotate" in m:
        split_hashes = [m["annotate"].hashes.get(s, "") for s in ("train", "validation", "test")]
        tags["lineage.labelled.version"] = sha256_text("".join(split_hashes))[:16]
        tags["lineage.labelled.train_uri"] = m["annotate"].outputs["train"]
    if "pretrain" in m:
        tags["lineage.pretrain.mlflow_run_id"] = str(m["pretrain"].info.get("mlflow_run_id", ""))
        tags["lineage.pretrain.base_model"] = str(m["pretrain"].info.get("base_model", ""))
    if "finetune" in m:
        tags["lineage.finetune.base_model"] = m["finetune"].inputs.get("base_model", "")
    return tags


def trace(run_dir: Path) -> list[str]:
    """Human-readable chain from the model back to the sources, newest stage first."""
    m = _manifests(run_dir)
    lines: list[str] = []

    def add(stage: str, text: str) -> None:
        lines.append(f"  {stage:9s} {text}")

    if "finetune" in m:
        ft = m["finetune"]
        add(
            "finetune",
            f"model {ft.outputs.get('model')} from base {ft.inputs.get('base_model')}; "
            f"trained on {ft.inputs.get('train')}",
        )
    if "pretrain" in m:
        pt = m["pretrain"]
        add(
            "pretrain",
            f"base {pt.info.get('base_model')}; corpus {pt.inputs.get('corpus', '(skipped)')}; "
            f"MLflow run {pt.info.get('mlflow_run_id', '-')}",
        )

    def add_gate(stage: str) -> None:
        if stage in m:
            g = m[stage]
            add(
                stage,
                f"suites {g.info.get('suites')} passed={g.info.get('passed')}"
                f"{' (accepted by hand)' if g.info.get('accepted') else ''}; "
                f"Data Docs {g.info.get('data_docs')}",
            )

    add_gate("gate_labels")
    if "annotate" in m:
        an = m["annotate"]
        labels = [v for k, v in an.inputs.items() if k.startswith("labels")]
        add("annotate", f"splits {an.counts}; labels from {', '.join(labels)}")
    add_gate("gate")
    if "curate" in m:
        cu = m["curate"]
        add(
            "curate",
            f"{cu.counts.get('records')} records (sha256 {cu.hashes.get('records', '')[:12]}) "
            f"from {cu.inputs.get('records')}",
        )
    if "collect" in m:
        co = m["collect"]
        add("collect", f"{co.counts.get('records')} records (sha256 {co.hashes.get('records', '')[:12]})")
        for key, value in co.inputs.items():
            for source in value.split(","):
                lines.append(f"              source {key}: {source}")
    return lines


def describe_version(name: str, version: Any) -> list[str]:
    tags = version.tags or {}
    aliases = ", ".join(getattr(version, "aliases", []) or []) or "none"
    head = [
        f"models:/{name}/{version.version}  aliases: {aliases}",
        f"  accuracy {tags.get('metric.accuracy', '?')}, run {tags.get('lineage.airflow.run_id', '?')}, "
        f"code {tags.get('lineage.code_version', '?')}, config {tags.get('lineage.config_hash', '?')[:12]}, "
        f"labelled set {tags.get('lineage.labelled.version', '?')}",
    ]
    run_dir = tags.get("lineage.run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        return head + [f"  run folder {run_dir!r} is not on this machine; tags: {tags}"]
    return head + trace(Path(run_dir))
