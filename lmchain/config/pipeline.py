"""The whole recipe: :class:`PipelineConfig`, loaded from YAML with dotted overrides.

A recipe (``configs/*.yaml``) maps 1:1 onto :class:`PipelineConfig`. Overrides are dotted
``key=value`` strings (``finetune.epochs=2``) from the CLI or from the DAG's Params; the value
is parsed as YAML, so ``2`` is an int and ``[a, b]`` a list. Loading reports every invalid or
unknown key at once, each by its dotted name, with the recipe it came from.
"""

from __future__ import annotations

import os
import typing
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from lmchain.config.annotate import AnnotateConfig, LabelSource
from lmchain.config.base import Section, doc, error_message, model_validator, problems
from lmchain.config.collect import CollectConfig, FileSource
from lmchain.config.curate import CurateConfig
from lmchain.config.evaluate import EvaluateConfig, RegisterConfig
from lmchain.config.feedback import FeedbackConfig
from lmchain.config.gate import GateConfig
from lmchain.config.serve import DeployConfig
from lmchain.config.train import FinetuneConfig, PretrainConfig
from lmchain.errors import ConfigError

CONFIGS_ENV = "LMCHAIN_CONFIGS"


# A field named `register` shadows ABCMeta.register on the class only (instances read the field).
warnings.filterwarnings("ignore", message='Field name "register" in "PipelineConfig" shadows', category=UserWarning)


Task = Literal["classification", "ner"]
TASKS: tuple[str, ...] = typing.get_args(Task)
# The span formats of collect.files[].format: labelled text for task: ner.
SPAN_FORMATS = ("conll", "spans", "label-studio")


class PipelineConfig(Section):
    name: str = doc("Name of the recipe, shown in manifests and MLflow.", "lmchain")
    task: Task = doc(
        "'classification': a label per text (annotate.labels, annotate.label_names). 'ner': entity spans per "
        "text (collect.files[].format conll, spans or label-studio; annotate.entity_types). So far a ner run "
        "goes collect -> curate -> gate -> annotate -> review_queue -> gate_labels.",
        "classification",
    )
    collect: CollectConfig = doc(
        "Collection.",
        factory=lambda: CollectConfig(files=[FileSource(path="${SST2}/train.tsv", text_field="sentence")]),
    )
    curate: CurateConfig = doc("Curation.", factory=CurateConfig)
    gate: GateConfig = doc("Data-quality gate.", factory=GateConfig)
    annotate: AnnotateConfig = doc(
        "Labelling.",
        factory=lambda: AnnotateConfig(labels=[LabelSource(path="${SST2}/train.tsv", text_field="sentence")]),
    )
    pretrain: PretrainConfig = doc("Masked-LM pretraining.", factory=PretrainConfig)
    finetune: FinetuneConfig = doc("Fine-tuning.", factory=FinetuneConfig)
    evaluate: EvaluateConfig = doc("Evaluation.", factory=EvaluateConfig)
    register: RegisterConfig = doc("Model registration.", factory=RegisterConfig)
    deploy: DeployConfig = doc("Deployment.", factory=DeployConfig)
    feedback: FeedbackConfig = doc("Feedback loop.", factory=FeedbackConfig)

    @model_validator(mode="after")
    def _task_fits(self) -> Any:
        found = []
        spans = [i for i, f in enumerate(self.collect.files) if f.format in SPAN_FORMATS]
        if self.task == "classification":
            found += [
                (f"collect.files[{i}].format", f"'{self.collect.files[i].format}' reads entity spans: set task: ner")
                for i in spans
            ]
            if self.annotate.entity_types:
                found.append(("annotate.entity_types", "is for task: ner; a classifier's labels are label_names"))
        else:
            if not self.annotate.entity_types:
                found.append(("annotate.entity_types", "task: ner needs the entity types, e.g. [PER, ORG, LOC, MISC]"))
            if self.annotate.labels:
                found.append(
                    (
                        "annotate.labels",
                        "label files are for classification; with task: ner the spans come with the collected "
                        "records (collect.files[].format conll, spans or label-studio)",
                    )
                )
            if self.annotate.mode != "human":
                found.append(("annotate.mode", "semi-automatic span labels are not there yet for task: ner; use human"))
        return problems(self, found)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# --------------------------------------------------------------------------- overrides


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value (e.g. finetune.epochs=2)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- recipes


def configs_dir() -> Path:
    """The recipes' folder: ``LMCHAIN_CONFIGS``, else ``configs/`` beside the package."""
    return Path(os.environ.get(CONFIGS_ENV, Path(__file__).resolve().parents[2] / "configs"))


def recipes() -> list[str]:
    """The recipe names of :func:`configs_dir` (what ``--recipe NAME`` and the trigger form offer)."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def resolve_recipe(recipe: str | os.PathLike[str]) -> Path:
    """A recipe is a path, or a bare name looked up in ``configs/`` (``demo`` -> configs/demo.yaml)."""
    path = Path(recipe)
    candidates = [path] if path.suffix else [path, configs_dir() / f"{path}.yaml"]
    if not path.is_absolute() and path.suffix:
        candidates.append(configs_dir() / path.name)
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ConfigError(f"recipe '{recipe}' not found; give a YAML path or one of: {', '.join(recipes())}")


def load_config(recipe: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a recipe, apply overrides and validate. ``recipe=None`` uses the built-in defaults.

    Every problem is reported at once, in one ConfigError naming the recipe."""
    data: dict[str, Any] = {}
    source = "defaults"
    if recipe is not None:
        path = resolve_recipe(recipe)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"recipe {path} must be a mapping of sections (collect:, curate:, ...)")
        data = loaded
    data = _merge(data, parse_overrides(overrides))
    where = f"(in {source}{' with overrides' if overrides else ''})"
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        message = error_message(exc, PipelineConfig)
        if "\n" in message:  # several: say where once, on the first line
            first, rest = message.split("\n", 1)
            raise ConfigError(f"{first[:-1]} {where}:\n{rest}") from None
        raise ConfigError(f"{message} {where}") from None


def describe(cls: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, doc, default) for every leaf field: the reference for users."""
    rows = []
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            rows.extend(describe(info.annotation, key + "."))
            continue
        default = info.get_default(call_default_factory=True)
        rows.append((key, info.description or "", default))
    return rows
