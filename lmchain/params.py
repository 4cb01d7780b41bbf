"""The trigger form of ``lmchain_pipeline``: a JSON schema per field, and its translation into
config overrides.

Airflow validates a run's params against these schemas when the run is created (UI form, REST
API, CLI), so a bad value is refused at trigger time with the field's name. The translation
into ``--set``-style overrides is plain Python, shared by the tasks and the tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmchain import STAGES

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_RECIPE = "demo"


def recipes() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml")) or [DEFAULT_RECIPE]


PARAMS_ENV = "LMCHAIN_PIPELINE_PARAMS"


def schema() -> dict[str, dict[str, Any]]:
    """Field name -> (default, JSON schema keywords); wrapped into Airflow Params by the DAG.

    ``LMCHAIN_PIPELINE_PARAMS`` (a JSON object of fields) replaces defaults: those are the params
    of every run that passes none, i.e. the nightly runs, and the values the form starts with.
    """
    fields = _fields()
    for name, value in deployment_defaults(fields).items():
        fields[name]["default"] = value
    return fields


def deployment_defaults(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The operator's defaults from ``LMCHAIN_PIPELINE_PARAMS``, each checked against its field's
    schema, so a typo fails the DAG's import with the field's name instead of a run at 02:00."""
    import jsonschema

    from lmchain.errors import ConfigError

    raw = os.environ.get(PARAMS_ENV, "").strip()
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{PARAMS_ENV} is not JSON ({exc}); e.g. '{{\"recipe\": \"sst2\"}}'") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{PARAMS_ENV} must be a JSON object of form fields, e.g. '{{\"recipe\": \"sst2\"}}'")
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"{PARAMS_ENV}: unknown field {name!r}; fields: {', '.join(fields)}")
        spec = {k: v for k, v in fields[name].items() if k not in ("default", "title", "description", "examples")}
        try:
            jsonschema.validate(value, spec)
        except jsonschema.ValidationError as exc:
            raise ConfigError(f"{PARAMS_ENV}: {name}={value!r} is invalid: {exc.message}") from exc
    return values


def _fields() -> dict[str, dict[str, Any]]:
    return {
        "recipe": {"default": DEFAULT_RECIPE, "type": "string", "enum": recipes(), "title": "Recipe",
                   "description": "YAML recipe in configs/: what to collect, how to train, where to deploy."},
        "stop_after": {"default": "deploy", "type": "string", "enum": list(STAGES), "title": "Run up to",
                       "description": "Run the chain up to and including this stage; later stages are skipped."},
        "pretrain": {"default": True, "type": "boolean", "title": "Pretraining",
                     "description": "Masked-LM pretraining on the curated corpus before fine-tuning "
                                    "(off: fine-tune the base model directly)."},
        "base_model": {"default": None, "type": ["null", "string"], "title": "Base model",
                       "description": "'minilm' (packaged MiniLM-L6), 'tiny-bert', a local HF folder or a hub id. "
                                      "Empty: the recipe's choice.", "examples": ["minilm", "tiny-bert"]},
        "finetune_method": {"default": None, "type": ["null", "string"], "enum": [None, "full", "lora"],
                            "title": "Fine-tune method",
                            "description": "'full' trains every weight; 'lora' trains low-rank adapters and the head. "
                                           "Empty: the recipe's choice."},
        "epochs": {"default": None, "type": ["null", "number"], "minimum": 0.1, "maximum": 50, "title": "Epochs",
                   "description": "Fine-tuning passes over the training split. Empty: the recipe's choice."},
        "annotation_mode": {"default": None, "type": ["null", "string"], "enum": [None, "human", "semi", "mixed"],
                            "title": "Annotation",
                            "description": "Training labels: 'human' only, 'semi'-automatic only (labelling functions "
                                           "and the champion's pre-labels), or 'mixed' (human, plus semi-automatic "
                                           "for texts without one). Empty: the recipe's choice."},
        "promotion_margin": {"default": None, "type": ["null", "number"], "minimum": 0, "maximum": 0.5,
                             "title": "Promotion margin",
                             "description": "Promote only when the lower bound of the accuracy gain over the champion "
                                            "exceeds this (0.01 = 1 point). Empty: the recipe's choice."},
        "sources": {"default": [], "type": "array", "items": {"type": "string", "minLength": 1},
                    "title": "Extra sources",
                    "description": "Files, globs or folders to collect in addition to the recipe's (text in a "
                                   "'text' column or key)."},
        "seeds": {"default": [], "type": "array", "items": {"type": "string", "pattern": "^https?://"},
                  "title": "Crawl seeds", "description": "http(s) URLs to crawl in addition to the recipe's."},
        "dry_run": {"default": False, "type": "boolean", "title": "Dry run",
                    "description": "Check the recipe, params and input files, then skip every stage."},
        "overrides": {"default": [], "type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9_.]+=.*$"},
                      "title": "Overrides",
                      "description": "Any config key as key=value, e.g. finetune.batch_size=32 "
                                     "(`lmchain config --keys` lists them)."},
    }


def to_overrides(params: dict[str, Any]) -> list[str]:
    """Form fields -> dotted overrides, applied before the free-form ``overrides``."""
    from lmchain.config import load_config

    out: list[str] = []
    if params.get("pretrain") is False:
        out.append("pretrain.enabled=false")
    if params.get("base_model"):
        out.append(f"pretrain.base_model={json.dumps(params['base_model'])}")
    if params.get("finetune_method"):
        out.append(f"finetune.method={params['finetune_method']}")
    if params.get("epochs") is not None:
        out += [f"finetune.epochs={params['epochs']}", "finetune.max_steps=0"]
    if params.get("annotation_mode"):
        out.append(f"annotate.mode={params['annotation_mode']}")
    if params.get("promotion_margin") is not None:
        out.append(f"evaluate.margin={params['promotion_margin']}")
    if params.get("sources") or params.get("seeds"):
        base = load_config(params.get("recipe") or DEFAULT_RECIPE).collect
        if params.get("sources"):
            files = [dict(f.__dict__) for f in base.files] + [{"path": p} for p in params["sources"]]
            out.append(f"collect.files={json.dumps(files)}")
        if params.get("seeds"):
            out.append(f"collect.crawl.seeds={json.dumps(list(base.crawl.seeds) + list(params['seeds']))}")
    return out + list(params.get("overrides") or [])


def should_skip(stage: str, params: dict[str, Any]) -> str | None:
    """Why ``stage`` is skipped in this run, or None."""
    stop_after = params.get("stop_after") or STAGES[-1]
    if stop_after in STAGES and STAGES.index(stage) > STAGES.index(stop_after):
        return f"stop_after={stop_after}"
    return None
