"""Cleaning steps: small objects with one method.

A step's ``__call__(record)`` returns ``None`` to keep the record (possibly after changing its
text in place) or a short reason string to drop it. The reasons are counted in the manifest and
stored with each rejected record.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from lmchain.artifacts import sha256_text

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def normalize_text(text: str) -> str:
    """NFKC, no control or zero-width characters, single spaces, no blank-line runs."""
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n", text).strip()


def normalise_for_dedup(text: str) -> str:
    """Case and punctuation folded: the key under which two texts count as the same sentence."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class Normalize:
    name = "normalize"

    def __call__(self, rec: dict) -> str | None:
        rec["text"] = normalize_text(rec["text"])
        return "empty" if not rec["text"] else None


@dataclass
class LengthFilter:
    min_chars: int
    max_chars: int
    min_words: int
    name: str = "length"

    def __call__(self, rec: dict) -> str | None:
        n = len(rec["text"])
        if n < self.min_chars:
            return "too_short"
        if n > self.max_chars:
            return "too_long"
        if len(rec["text"].split()) < self.min_words:
            return "too_few_words"
        return None


@dataclass
class ExactDedup:
    """Keeps the first record of each normalised text; later copies are dropped."""

    seen: dict[str, str] = field(default_factory=dict)
    name: str = "dedup"

    def __call__(self, rec: dict) -> str | None:
        key = sha256_text(rec["text"])
        first = self.seen.setdefault(key, rec["id"])
        if first != rec["id"]:
            rec["duplicate_of"] = first
            return "exact_duplicate"
        rec["sha256"] = key
        return None
