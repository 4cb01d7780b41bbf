"""Cleaning steps: small objects with one method.

A step's ``__call__(record)`` (a :class:`~lmchain.records.Document`) returns ``None`` to keep
the record (possibly after changing its text in place) or a short reason string to drop it. The
reasons are counted in the manifest and stored with each rejected record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lmchain.records import Document
from lmchain.text import normalize_text


# Lines that web pages repeat around their content: navigation, cookie and share prompts,
# copyright footers. Matched on whole short lines only, so prose that mentions them stays.
BOILERPLATE_PATTERNS = [
    r"(skip to (main )?content|jump to navigation|back to top|toggle navigation|main menu)",
    r"(this (web)?site uses cookies.*|we use cookies.*|accept (all )?cookies|cookie (settings|preferences))",
    r"((copyright )?(©|\(c\)|copyright) ?\d{4}.*|all rights reserved\.?)",
    r"(share (this|on) (facebook|twitter|x|linkedin|email).*|follow us on .*|tweet|pin it)",
    r"(sign up for our newsletter.*|subscribe to our newsletter.*|log ?in|sign ?in|register|sign up)",
    r"(read more|click here.*|previous( post| page)?|next( post| page)?|load more|show more)",
    r"(privacy policy|terms (of use|of service|and conditions)|cookie policy)( ?[|·•] ?.*)?",
]


@dataclass
class Normalize:
    """Repairs Unicode, normalises whitespace and/or drops boilerplate lines."""

    normalize: bool = True
    boilerplate: bool = False
    max_boilerplate_line: int = 120
    patterns: list[str] = field(default_factory=lambda: list(BOILERPLATE_PATTERNS))
    name: str = "normalize"

    def __post_init__(self) -> None:
        self._boiler = re.compile(r"^\W*(?:" + "|".join(self.patterns) + r")\W*$", re.IGNORECASE)

    def __call__(self, rec: Document) -> str | None:
        text = normalize_text(rec["text"]) if self.normalize else rec["text"]
        if self.boilerplate and text:
            lines = text.split("\n")
            kept = [ln for ln in lines if len(ln) > self.max_boilerplate_line or not self._boiler.match(ln.strip())]
            if len(kept) != len(lines):
                rec["boilerplate_lines"] = len(lines) - len(kept)
                text = "\n".join(kept).strip()
                if not text:
                    rec["text"] = text
                    return "boilerplate_only"
        rec["text"] = text
        return "empty" if not text.strip() else None


@dataclass
class LengthFilter:
    min_chars: int
    max_chars: int
    min_words: int
    name: str = "length"

    def __call__(self, rec: Document) -> str | None:
        n = len(rec["text"])
        if n < self.min_chars:
            return "too_short"
        if n > self.max_chars:
            return "too_long"
        if len(rec["text"].split()) < self.min_words:
            return "too_few_words"
        return None
