"""Text normalisation shared by the stages: one definition of each form a text takes.

- :func:`normalize_text`: the cleaned text curate keeps, and the form annotate, the feedback
  merge and label import bring texts to before they are matched against the corpus.
- :func:`normalise_for_dedup`: the key under which two texts count as the same sentence (splits,
  leakage checks, the gate's duplicate and overlap checks, one feedback row per text).
- :func:`shingle_words`: the words near-duplicate detection and decontamination hash.
- :func:`collapse_whitespace`: one line, single spaces (titles, the language-id model's input).

Keep them here: a key computed two slightly different ways would let a test sentence leak into
training, or a label miss the corpus text it belongs to.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_PUNCT = re.compile(r"[^\w\s]")
_PUNCT_RUNS = re.compile(r"[^\w\s]+")
_DIGITS = re.compile(r"\d+")


def fix_unicode(text: str) -> str:
    """Mojibake and broken escapes repaired (ftfy); curly quotes are kept, they are not errors."""
    if text.isascii() and "&" not in text:
        return text  # nothing ftfy would change: no mojibake without non-ASCII, no HTML entity
    return ftfy.fix_text(text, uncurl_quotes=False)


def normalize_text(text: str) -> str:
    """Unicode repaired, NFKC, no control or zero-width characters, single spaces, paragraphs
    separated by one blank line (Gopher's paragraph checks need them). Annotate joins labels onto
    the corpus through this same function."""
    text = unicodedata.normalize("NFKC", fix_unicode(text))
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def normalise_for_dedup(text: str) -> str:
    """Case and punctuation folded: the key under which two texts count as the same sentence."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def shingle_words(text: str) -> list[str]:
    """The words of :func:`normalise_for_dedup` with digit runs folded to 0 (as datatrove
    simplifies text before shingling): "Page 12" and "page 7" share their words."""
    return _DIGITS.sub("0", _PUNCT_RUNS.sub(" ", text.lower())).split()


def collapse_whitespace(text: str) -> str:
    """Every run of whitespace, newlines included, as one space; no leading or trailing space."""
    return " ".join(text.split())
