"""Regenerate ``lmchain/curate/tables.json``: the data the web-document filters need to agree with datatrove.

datatrove's Gopher, C4 and FineWeb filters count words and sentences with spaCy's English
tokenizer and sentencizer, and test characters against its own punctuation sets. lmchain
re-implements those filters without spaCy (which re-creates a lexeme for every new word and
is most of datatrove's run time), so it needs the same affix rules, special cases and
character sets. This script copies them out of the installed packages (spaCy: MIT licence;
datatrove: Apache-2.0). It is a developer tool, run once per upgrade of either package:

    .venv/bin/pip install -r bench/requirements.txt -c constraints.txt
    .venv/bin/python tools/make_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

ORTH = 65  # spaCy's attribute id of a token's text


def build() -> dict:
    from importlib.metadata import version

    import spacy
    from datatrove.utils.text import PUNCTUATION, TERMINAL_PUNCTUATION
    from spacy.pipeline import Sentencizer

    tok = spacy.blank("en").tokenizer
    return {
        "source": f"spacy {spacy.__version__} blank('en') tokenizer; datatrove {version('datatrove')} utils/text.py",
        "prefix": tok.prefix_search.__self__.pattern,
        "suffix": tok.suffix_search.__self__.pattern,
        "infix": tok.infix_finditer.__self__.pattern,
        "url": tok.url_match.__self__.pattern,
        "specials": {key: [t[ORTH] for t in toks] for key, toks in sorted(tok.rules.items())},
        "sentence_punct": list(Sentencizer.default_punct_chars),
        "punctuation": PUNCTUATION,
        "terminal_punctuation": sorted(TERMINAL_PUNCTUATION),
    }


if __name__ == "__main__":
    # Package data (pyproject's package-data), read by lmchain.curate.tokens through importlib.resources.
    out = Path(__file__).resolve().parent.parent / "lmchain" / "curate" / "tables.json"
    out.write_text(json.dumps(build(), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
