"""Register: log the fine-tuned model to MLflow, register a version, promote it if it is better.

The version carries its test metrics and lineage as tags. It gets the ``champion`` alias when
no champion exists or when it beats the champion's metric by more than ``min_improvement``.
A rerun for the same pipeline run reuses the version it registered before.
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
from pathlib import Path

from lmchain import registry
from lmchain.artifacts import Manifest, RunContext, StageOutput
from lmchain.config import RegisterConfig

SERVING_REQUIREMENTS = ("torch", "transformers", "tokenizers", "mlflow", "pandas")
PACKAGE_DIR = Path(__file__).resolve().parent
PYFUNC_MODEL = PACKAGE_DIR / "serve" / "pyfunc_model.py"


def _pip_requirements() -> list[str]:
    # Pinned from the running environment: MLflow's own inference would load the model in a
    # subprocess just to guess these.
    return [f"{name}=={metadata.version(name)}" for name in SERVING_REQUIREMENTS]


def _existing_version(name: str, run_id: str):
    c = registry.client()
    for v in c.search_model_versions(f"name = '{name}'"):
        if (v.tags or {}).get(registry.RUN_TAG) == run_id:
            return v
    return None


def run(cfg: RegisterConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import mlflow
    import pandas as pd

    finetune, evaluate = inputs["finetune"], inputs["evaluate"]
    model_dir = finetune["outputs"]["model"]
    metrics = evaluate["metrics"]
    client = registry.client()

    version = _existing_version(cfg.model_name, ctx.run_id)
    if version is None:
        with registry.active_run(ctx, ctx.experiment):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_MODEL), artifacts={"model_dir": model_dir},
                code_paths=[str(PACKAGE_DIR)], pip_requirements=_pip_requirements(),
                input_example=pd.DataFrame({"text": ["a gripping film"]}))
        tags = {registry.RUN_TAG: ctx.run_id, "lineage.model_dir": model_dir,
                "lineage.train": finetune["inputs"].get("train", ""),
                "lineage.base_model": finetune["inputs"].get("base_model", ""),
                **{f"metric.{k}": str(v) for k, v in metrics.items()}}
        version = mlflow.register_model(info.model_uri, cfg.model_name, tags=tags)
        version = client.get_model_version(cfg.model_name, version.version)

    champion = registry.champion(cfg.model_name, cfg.alias)
    champion_metric = registry.version_metric(cfg.model_name, champion, cfg.metric) if champion else None
    new_metric = float(metrics[cfg.metric])
    if champion is not None and champion.version == version.version:
        promoted, reason = True, "already champion"
    elif champion is None:
        promoted, reason = True, "no champion yet"
    elif champion_metric is None or new_metric > champion_metric + cfg.min_improvement:
        promoted, reason = True, f"{cfg.metric} {new_metric:.4f} > champion v{champion.version} {champion_metric}"
    else:
        promoted, reason = False, (f"{cfg.metric} {new_metric:.4f} does not beat champion v{champion.version} "
                                   f"{champion_metric:.4f} by more than {cfg.min_improvement}")
    if promoted:
        client.set_registered_model_alias(cfg.model_name, cfg.alias, version.version)
    client.set_model_version_tag(cfg.model_name, version.version, "lmchain.promotion", reason)

    with StageOutput(ctx, "register", dataclasses.asdict(cfg)) as out:
        out.manifest.inputs = {"model": model_dir}
        out.manifest.outputs = {"model_uri": f"models:/{cfg.model_name}/{version.version}",
                                "champion_uri": f"models:/{cfg.model_name}@{cfg.alias}"}
        out.manifest.metrics = {cfg.metric: new_metric}
        out.manifest.info = {"model_name": cfg.model_name, "version": int(version.version), "promoted": promoted,
                             "alias": cfg.alias if promoted else None, "reason": reason,
                             "previous_champion": int(champion.version) if champion else None,
                             "tracking_uri": registry.tracking_uri()}
    return out.manifest
