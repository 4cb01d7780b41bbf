"""Configuration: one pydantic model per section, loaded from a YAML recipe, overridable by flags.

A module per area (collect, curate, gate, annotate, train, evaluate, serve, feedback) declares
its sections; :mod:`lmchain.config.pipeline` assembles them into :class:`PipelineConfig` and
loads recipes. Each field carries its documentation (``Field(description=...)``), so that
``lmchain config --keys``, the Airflow trigger form (:mod:`lmchain.params`) and the CLI's flags
and choices are generated from the models rather than repeated.
"""

from lmchain.config.annotate import (
    ANNOTATION_MODES,
    ActiveConfig,
    AnnotateConfig,
    AnnotationMode,
    LabelSource,
    WeakLabelConfig,
)
from lmchain.config.base import Section, build, choices, error_message, replace
from lmchain.config.collect import CollectConfig, CrawlConfig, FileSource
from lmchain.config.curate import (
    PII_KINDS,
    C4Config,
    CurateConfig,
    DecontaminateConfig,
    FineWebConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageConfig,
    NearDedupConfig,
    PiiConfig,
    PiiKind,
    PiiPattern,
)
from lmchain.config.evaluate import EvaluateConfig, RegisterConfig
from lmchain.config.feedback import FeedbackConfig
from lmchain.config.gate import GateConfig, SuiteConfig
from lmchain.config.pipeline import (
    CONFIGS_ENV,
    PipelineConfig,
    configs_dir,
    describe,
    load_config,
    parse_overrides,
    recipes,
    resolve_recipe,
)
from lmchain.config.serve import SERVING_VARIANTS, DeployConfig, ServeConfig, ServingVariant
from lmchain.config.train import SEARCHABLE_EXCLUDED, FinetuneConfig, PretrainConfig, SearchConfig, TrainCommon

__all__ = [
    "ANNOTATION_MODES",
    "ActiveConfig",
    "AnnotateConfig",
    "AnnotationMode",
    "C4Config",
    "CONFIGS_ENV",
    "CollectConfig",
    "CrawlConfig",
    "CurateConfig",
    "DecontaminateConfig",
    "DeployConfig",
    "EvaluateConfig",
    "FeedbackConfig",
    "FileSource",
    "FineWebConfig",
    "FinetuneConfig",
    "GateConfig",
    "GopherQualityConfig",
    "GopherRepetitionConfig",
    "LabelSource",
    "LanguageConfig",
    "NearDedupConfig",
    "PII_KINDS",
    "PiiConfig",
    "PiiKind",
    "PiiPattern",
    "PipelineConfig",
    "PretrainConfig",
    "RegisterConfig",
    "SEARCHABLE_EXCLUDED",
    "SERVING_VARIANTS",
    "SearchConfig",
    "Section",
    "ServeConfig",
    "ServingVariant",
    "SuiteConfig",
    "TrainCommon",
    "WeakLabelConfig",
    "build",
    "choices",
    "configs_dir",
    "describe",
    "error_message",
    "load_config",
    "parse_overrides",
    "recipes",
    "replace",
    "resolve_recipe",
]
