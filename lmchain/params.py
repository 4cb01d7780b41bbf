"""The trigger form of ``lmchain_pipeline``: a JSON schema per field, and its translation into
config overrides.

Airflow validates a run's params against these schemas when the run is created (UI form, REST
API, CLI), so a bad value is refused at trigger time with the field's name. The translation
into ``--set``-style overrides is plain Python, shared by the tasks and the tests.

Two fields reach further than a choice, so the deployer bounds them:

- ``sources`` must be absolute paths under ``LMCHAIN_SOURCE_ROOTS`` (folders separated by
  ``:``; default: ``$LMCHAIN_DATA`` when set, ``../shared/data`` beside the repository and
  ``<home>/inbox``). ``..``, ``$VARIABLES`` and ``~`` are refused in the form already; at
  run time every path is resolved (symbolic links and ``..``) and every file a glob or folder
  names is checked again, so a link inside a root cannot lead outside it.
- ``overrides`` may set only the keys in ``LMCHAIN_OVERRIDE_KEYS`` (comma-separated, ``*``
  wildcards: ``finetune.*``; ``*`` alone allows every key). The default is a few training knobs
  (:data:`DEFAULT_OVERRIDE_KEYS`): never a path, host, store URL, key file or command.

Both are checked twice: by the form's JSON schema when the run is created (the REST API answers
400 and no run starts), and by :func:`to_overrides` in the run's first task (the schema is built
when the DAG is parsed; the task sees the worker's settings, and a symlink can only be seen there).
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
from pathlib import Path
from typing import Any

from lmchain.config import AnnotateConfig, FinetuneConfig, choices
from lmchain.config import recipes as recipe_names
from lmchain.home import Home
from lmchain.stages import STAGES

DEFAULT_RECIPE = "demo"


def recipes(home: Home | None = None) -> list[str]:
    """The form's recipe choices: the names of ``LMCHAIN_CONFIGS``'s recipes (else configs/'s), as
    ``--recipe NAME`` finds them, then the absolute paths of the YAML files in the other recipe
    roots (``LMCHAIN_RECIPE_ROOTS``, else ``<home>/recipes``)."""
    from lmchain.config import configs_dir

    named = configs_dir().resolve()
    paths = [
        str(p)
        for root in recipe_roots(home)
        if root.resolve() != named
        for p in sorted(root.glob("*.y*ml"))
        if p.suffix in (".yaml", ".yml") and p.is_file()
    ]
    return (recipe_names() or [DEFAULT_RECIPE]) + list(dict.fromkeys(paths))


def recipe_roots(home: Home | None = None) -> list[Path]:
    """The folders a recipe given by path must lie in: ``LMCHAIN_RECIPE_ROOTS``, else configs/
    (``LMCHAIN_CONFIGS``) and ``<home>/recipes``."""
    from lmchain.config import configs_dir

    listed = _roots(RECIPE_ROOTS_ENV)
    return listed if listed is not None else _absolute([configs_dir(), Home.of(home).recipes])


def _roots(env: str) -> list[Path] | None:
    """The folders a deployer listed in ``env`` (separated by ``os.pathsep``, ``~`` expanded);
    None where ``env`` is unset or blank (then the defaults apply)."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return None
    return _absolute([Path(os.path.expanduser(p.strip())) for p in raw.split(os.pathsep) if p.strip()])


def _absolute(roots: list[Path]) -> list[Path]:
    return list(dict.fromkeys(Path(os.path.abspath(r)) for r in roots))


def check_recipe(recipe: str) -> None:
    """A form recipe is a name of configs/, or the absolute path of a YAML file that resolves
    (symbolic links too) to a file directly in a recipe root: a REST trigger cannot make a task
    read any YAML file of the worker."""
    from lmchain.errors import ConfigError

    if recipe in recipe_names():
        return
    roots = recipe_roots()
    path = Path(recipe)
    real = path.resolve()
    if not path.is_absolute() or real.suffix not in (".yaml", ".yml") or not real.is_file():
        problem = "is neither a recipe name nor the absolute path of a YAML file"
    elif real.parent not in [r.resolve() for r in roots]:
        problem = "is not in a recipe folder (after resolving symbolic links)"
    else:
        return
    raise ConfigError(
        f"recipe: '{recipe}' {problem}; give one of {', '.join(recipe_names())} or a YAML file in "
        f"{', '.join(str(r) for r in roots)} (the deployer sets {RECIPE_ROOTS_ENV})"
    )


def _choice(model, name: str, title: str, what: str) -> dict[str, Any]:
    """A form field that picks one of a config field's choices, or leaves the recipe's (null);
    the choices and their explanation come from the model."""
    field = model.model_fields[name]
    return {
        "default": None,
        "type": ["null", "string"],
        "enum": [None, *choices(model, name)],
        "title": title,
        "description": f"{what}: {field.description} Empty: the recipe's choice.",
    }


PARAMS_ENV = "LMCHAIN_PIPELINE_PARAMS"
SOURCE_ROOTS_ENV = "LMCHAIN_SOURCE_ROOTS"
RECIPE_ROOTS_ENV = "LMCHAIN_RECIPE_ROOTS"
OVERRIDE_KEYS_ENV = "LMCHAIN_OVERRIDE_KEYS"
# Knobs of training and evaluation: numbers and switches that change a run's result, not what it
# reads, where it connects or what it executes.
DEFAULT_OVERRIDE_KEYS = (
    "pretrain.enabled",
    "pretrain.epochs",
    "pretrain.max_steps",
    "pretrain.learning_rate",
    "pretrain.batch_size",
    "pretrain.seed",
    "pretrain.checkpoint_every",
    "pretrain.max_texts",
    "finetune.epochs",
    "finetune.max_steps",
    "finetune.learning_rate",
    "finetune.batch_size",
    "finetune.seed",
    "finetune.warmup_ratio",
    "finetune.weight_decay",
    "finetune.patience",
    "finetune.method",
    "annotate.max_examples",
    "annotate.seed",
    "annotate.mode",
    "evaluate.margin",
    "evaluate.seed",
    "collect.crawl.max_pages",
    "collect.crawl.max_depth",
)
_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")


def source_roots(home: Home | None = None) -> list[Path]:
    """The folders form ``sources`` must lie under (``LMCHAIN_SOURCE_ROOTS``, else the data folders
    the recipes already use and ``<home>/inbox``; ``home`` None: the environment's)."""
    if (listed := _roots(SOURCE_ROOTS_ENV)) is not None:
        return listed
    from lmchain.airflow_env import REPO_ROOT

    home = Home.of(home)
    roots = [home.data] if home.data is not None else []
    return _absolute([*roots, REPO_ROOT.parent / "shared" / "data", home.inbox])


def override_keys() -> list[str]:
    """The config keys (``fnmatch`` patterns) that form ``overrides`` may set."""
    raw = os.environ.get(OVERRIDE_KEYS_ENV, "").strip()
    if not raw:
        return list(DEFAULT_OVERRIDE_KEYS)
    return [k.strip() for k in raw.split(",") if k.strip()]


def _literal(text: str) -> str:
    """``text`` as a regular expression that JSON schema (Python) and the form (JavaScript) agree on."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _sources_pattern() -> str:
    spellings = dict.fromkeys(str(p).rstrip("/") for r in source_roots() for p in (r, r.resolve()))
    roots = "|".join(_literal(s) for s in spellings)
    # No '..' segment, no '$' or '~' (form paths are not expanded), and under a root.
    return rf"^(?!.*(^|/)\.\.(/|$))(?!.*[$])({roots})(/|$)"


def _overrides_pattern() -> str:
    keys = override_keys()
    if "*" in keys:
        return "^[A-Za-z0-9_.]+=.*$"
    alternatives = "|".join(
        "".join("[A-Za-z0-9_.]*" if c == "*" else "[A-Za-z0-9_.]" if c == "?" else _literal(c) for c in key)
        for key in keys
    )
    return rf"^({alternatives})=.*$"


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
        raise ConfigError(f'{PARAMS_ENV} is not JSON ({exc}); e.g. \'{{"recipe": "sst2"}}\'') from exc
    if not isinstance(values, dict):
        raise ConfigError(f'{PARAMS_ENV} must be a JSON object of form fields, e.g. \'{{"recipe": "sst2"}}\'')
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
        "recipe": {
            "default": DEFAULT_RECIPE,
            "type": "string",
            "enum": recipes(),
            "title": "Recipe",
            "description": "YAML recipe: a name of configs/ (LMCHAIN_CONFIGS), or a file of the recipe folders "
            f"({RECIPE_ROOTS_ENV}): what to collect, how to train, where to deploy.",
        },
        "stop_after": {
            "default": "deploy",
            "type": "string",
            "enum": list(STAGES),
            "title": "Run up to",
            "description": "Run the chain up to and including this stage; later stages are skipped.",
        },
        "pretrain": {
            "default": True,
            "type": "boolean",
            "title": "Pretraining",
            "description": "Masked-LM pretraining on the curated corpus before fine-tuning "
            "(off: fine-tune the base model directly).",
        },
        "base_model": {
            "default": None,
            "type": ["null", "string"],
            "title": "Base model",
            "description": "'minilm' (packaged MiniLM-L6), 'tiny-bert', a local HF folder or a hub id. "
            "Empty: the recipe's choice.",
            "examples": ["minilm", "tiny-bert"],
        },
        "finetune_method": _choice(FinetuneConfig, "method", "Fine-tune method", "finetune.method"),
        "epochs": {
            "default": None,
            "type": ["null", "number"],
            "minimum": 0.1,
            "maximum": 50,
            "title": "Epochs",
            "description": "Fine-tuning passes over the training split. Empty: the recipe's choice.",
        },
        "annotation_mode": _choice(AnnotateConfig, "mode", "Annotation", "annotate.mode"),
        "promotion_margin": {
            "default": None,
            "type": ["null", "number"],
            "minimum": 0,
            "maximum": 0.5,
            "title": "Promotion margin",
            "description": "Promote only when the lower bound of the accuracy gain over the champion "
            "exceeds this (0.01 = 1 point). Empty: the recipe's choice.",
        },
        "sources": {
            "default": [],
            "type": "array",
            "items": {"type": "string", "minLength": 1, "pattern": _sources_pattern()},
            "title": "Extra sources",
            "description": "Files, globs or folders to collect in addition to the recipe's (text in a "
            "'text' column or key): absolute paths under "
            + ", ".join(str(r) for r in source_roots())
            + f" ({SOURCE_ROOTS_ENV}).",
        },
        "seeds": {
            "default": [],
            "type": "array",
            "items": {"type": "string", "pattern": "^https?://"},
            "title": "Crawl seeds",
            "description": "http(s) URLs to crawl in addition to the recipe's.",
        },
        "dry_run": {
            "default": False,
            "type": "boolean",
            "title": "Dry run",
            "description": "Check the recipe, params and input files, then skip every stage.",
        },
        "overrides": {
            "default": [],
            "type": "array",
            "items": {"type": "string", "pattern": _overrides_pattern()},
            "title": "Overrides",
            "description": "Config keys as key=value, e.g. finetune.batch_size=32. Allowed keys "
            f"({OVERRIDE_KEYS_ENV}): " + ", ".join(override_keys()) + ".",
        },
    }


def to_overrides(params: dict[str, Any]) -> list[str]:
    """Form fields -> dotted overrides, applied before the free-form ``overrides``.

    Raises ConfigError, naming the field, for a source outside the roots or an override key
    outside the allow-list."""
    from lmchain.config import load_config

    check_recipe(params.get("recipe") or DEFAULT_RECIPE)
    check_sources(params.get("sources") or [])
    check_overrides(params.get("overrides") or [])
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
            files = [f.model_dump() for f in base.files] + [{"path": p} for p in params["sources"]]
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


def check_overrides(overrides: list[str]) -> None:
    """Every free-form override must set a key of the deployer's allow-list."""
    from lmchain.errors import ConfigError

    allowed = override_keys()
    for item in overrides:
        key = str(item).split("=", 1)[0].strip()
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in allowed):
            raise ConfigError(
                f"overrides: '{key}' may not be set from the trigger form; allowed keys: "
                f"{', '.join(allowed)} (the deployer sets them in {OVERRIDE_KEYS_ENV})"
            )


def check_sources(sources: list[str]) -> None:
    """Every form source, and every file it names, must resolve to a path under a source root."""
    from lmchain.errors import ConfigError

    roots = source_roots()
    resolved = [r.resolve() for r in roots]
    for raw in sources:
        problem = _source_problem(str(raw), resolved)
        if problem:
            raise ConfigError(
                f"sources: '{raw}' {problem}; form sources must lie under "
                f"{', '.join(str(r) for r in roots)} (the deployer sets {SOURCE_ROOTS_ENV})"
            )


def _source_problem(raw: str, roots: list[Path]) -> str | None:
    if "$" in raw or raw.startswith("~"):
        return "uses $VARIABLES or ~, which form sources do not expand"
    if not os.path.isabs(raw):
        return "is not an absolute path"
    parts = Path(raw).parts
    magic = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    base = Path(*parts[:magic])
    if not _under(base.resolve(), roots):
        return "is outside the allowed folders (after resolving '..' and symbolic links)"
    if magic < len(parts):
        named = [Path(p) for p in glob.glob(raw, recursive=True)]
    elif base.is_dir():
        named = list(_links_below(base))
    else:
        named = []
    if any(not _under(p.resolve(), roots) for p in named):
        return "leads outside the allowed folders through a symbolic link"
    return None


def _links_below(folder: Path):
    """Symbolic links inside ``folder`` (not followed): the only way out of it."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                yield Path(dirpath, name)


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)
