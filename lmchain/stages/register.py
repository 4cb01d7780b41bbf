"""The ``register`` stage: log the fine-tuned model to MLflow, register a version, move the aliases.

Every new version gets the ``challenger`` alias, and the evaluate stage's champion/challenger
decision as tags (``lmchain.promoted``, ``lmchain.decision``). The ``champion`` alias is moved by
the deploy stage, and only after the version passed infra validation in a real server. The
version carries its test metrics and lineage as tags. A rerun for the same pipeline run reuses
the version it registered before.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from lmchain.artifacts import Manifest, RunContext, StageOutput
from lmchain.config import RegisterConfig

CONFIG = "register"
READS = ("finetune", "evaluate")
ASSETS: tuple[str, ...] = ()

SERVING_REQUIREMENTS = ("torch", "transformers", "tokenizers", "mlflow", "pandas")
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # lmchain/: the pyfunc ships the package
PYFUNC_MODEL = PACKAGE_DIR / "serve" / "pyfunc_model.py"
CHALLENGER = "challenger"


def _pip_requirements() -> list[str]:
    # Pinned from the running environment: MLflow's own inference would load the model in a
    # subprocess just to guess these.
    return [f"{name}=={metadata.version(name)}" for name in SERVING_REQUIREMENTS]


def _existing_version(ctx: RunContext, name: str):
    from lmchain import registry

    run_id = ctx.run_id
    for v in registry.client(ctx.home).search_model_versions(f"name = '{name}'"):
        if (v.tags or {}).get(registry.RUN_TAG) == run_id:
            return v
    return None


def signature():
    """What the pyfunc takes and returns: a ``text`` column in; ``label``, ``label_id`` and a
    ``scores`` map (label name -> probability) out. Declared rather than inferred: inference
    would load the model just to guess it, and would type ``scores`` loosely."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import ColSpec, Map, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "text")]),
        outputs=Schema(
            [
                ColSpec(DataType.string, "label"),
                ColSpec(DataType.long, "label_id"),
                ColSpec(Map(DataType.double), "scores"),
            ]
        ),
    )


def _log_model(ctx: RunContext, model_dir: str, name: str, tags: dict[str, str]):
    import mlflow
    import pandas as pd

    from lmchain import registry

    # The artifact folder is the fine-tuned model as transformers saved it: weights, config and
    # the tokenizer, so the registered version is self-contained.
    with registry.active_run(ctx, ctx.experiment):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_MODEL),
            artifacts={"model_dir": model_dir},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=_pip_requirements(),
            signature=signature(),
            input_example=pd.DataFrame({"text": ["a gripping film", "dull and far too long"]}),
        )
    with registry.fluent(ctx.home):  # register_model resolves the logged model's URI through the fluent API
        return mlflow.register_model(info.model_uri, name, tags=tags)


def run(cfg: RegisterConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import mlflow

    from lmchain import registry
    from lmchain.lineage import lineage_tags

    finetune, evaluate = inputs["finetune"], inputs["evaluate"]
    model_dir = finetune["outputs"]["model"]
    decision = evaluate["info"]["decision"]
    client = registry.client(ctx.home)

    version = _existing_version(ctx, cfg.model_name)
    if version is None:
        tags = {
            registry.RUN_TAG: ctx.run_id,
            **lineage_tags(ctx),
            **{f"metric.{k}": str(v) for k, v in evaluate["metrics"].items()},
        }
        version = _log_model(ctx, model_dir, cfg.model_name, tags)
    number = str(version.version)
    previous = registry.champion(cfg.model_name, home=ctx.home)
    client.set_registered_model_alias(cfg.model_name, CHALLENGER, number)
    client.set_model_version_tag(cfg.model_name, number, "lmchain.decision", decision["reason"][:5000])
    client.set_model_version_tag(cfg.model_name, number, "lmchain.promoted", str(decision["promote"]).lower())
    with registry.stage_run(ctx, ctx.experiment, "register"):
        mlflow.log_dict({**decision, "version": number, "model_name": cfg.model_name}, "register/decision.json")
        mlflow.set_tag("lmchain.promoted", str(decision["promote"]).lower())

    with StageOutput(ctx, "register", cfg.model_dump()) as out:
        out.manifest.inputs = {"model": model_dir}
        out.manifest.outputs = {
            "model_uri": f"models:/{cfg.model_name}/{number}",
            "champion_uri": f"models:/{cfg.model_name}@champion",
        }
        out.manifest.metrics = dict(evaluate["metrics"])
        out.manifest.info = {
            "model_name": cfg.model_name,
            "version": int(number),
            "promoted": decision["promote"],
            "alias": CHALLENGER,
            "reason": decision["reason"],
            "previous_champion": int(previous.version) if previous else None,
            "tracking_uri": ctx.home.tracking_uri,
        }
    return out.manifest
