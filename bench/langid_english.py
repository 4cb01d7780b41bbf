"""Language id on clean English: how much the curate stage's language filter drops, before and
after the margin rule, on the same texts; and that it still rejects German, French and Spanish.

English texts (all clean, all English):
- the Python documentation's paragraphs (Debian's python3.11-doc: the text of every ``<p>`` of
  every page, 8+ words): prose with names, identifiers and version numbers in it, like news;
- SST-2's training sentences of 8+ words (unique, as written: lower-cased and tokenised).
Not English: ``tests/fixtures/not_english.tsv`` (111 German, French, Spanish, Dutch, Italian and
Portuguese sentences written for this check, 30 of them of 3-7 words).

Each text is normalised as the curate stage does (``Normalize``), then judged by
- ``before``: a recipe that set nothing before the change (``min_score`` 0.65 alone, every text
  judged),
- ``after``: a recipe that sets nothing now (``LanguageConfig()``: 0.65, or a 2x margin over every
  other language; every text judged),
- the demo recipe's settings (``min_score`` 0.5, texts under 10 words unjudged) without and with
  the margin.

Ends ``RESULT langid docs_before=… docs_after=… sst2_before=… sst2_after=… foreign_rejected_before=…
foreign_rejected_after=…`` (drop rates of the English texts; rejected non-English sentences).
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import lxml.html

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmchain.config.curate import LanguageConfig  # noqa: E402
from lmchain.curate.langid import LanguageFilter  # noqa: E402
from lmchain.curate.steps import Normalize  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html")
MIN_WORDS = 8


def normalised(texts: list[str]) -> list[str]:
    step, out = Normalize(), []
    for t in texts:
        rec = {"text": t}
        if step(rec) is None:
            out.append(rec["text"])
    return out


def doc_paragraphs() -> list[str]:
    if not DOCS.is_dir():
        sys.exit(f"{DOCS} is missing: apt-get install -y python3.11-doc")
    paras = []
    for path in sorted(DOCS.rglob("*.html")):
        for p in lxml.html.fromstring(path.read_bytes()).iter("p"):
            text = p.text_content()
            if len(text.split()) >= MIN_WORDS:
                paras.append(text)
    return normalised(paras)


def sst2_sentences() -> list[str]:
    from lmchain.datasets import sst2_dir

    with open(sst2_dir(download=False) / "train.tsv", encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return normalised(sorted({r["sentence"].strip() for r in rows if len(r["sentence"].split()) >= MIN_WORDS}))


def not_english() -> list[tuple[str, str]]:
    with open(REPO / "tests" / "fixtures" / "not_english.tsv", encoding="utf-8", newline="") as fh:
        return [(r["language"], r["text"]) for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def dropped(f: LanguageFilter, texts: list[str]) -> tuple[int, Counter]:
    reasons: Counter = Counter()
    for t in texts:
        reason = f({"text": t})
        if reason:
            reasons[reason] += 1
    return sum(reasons.values()), reasons


def main() -> None:
    default = LanguageConfig()
    filters = {
        "before": LanguageFilter(min_score=0.65, min_words=0, min_margin=0),
        "after": LanguageFilter(default.allow, default.min_score, default.min_words, None, default.min_margin),
        "demo_before": LanguageFilter(min_score=0.5, min_words=10, min_margin=0),
        "demo_after": LanguageFilter(min_score=0.5, min_words=10, min_margin=default.min_margin),
    }
    corpora = {"docs": doc_paragraphs(), "sst2": sst2_sentences()}
    foreign = not_english()
    rates: dict[str, float] = {}
    for corpus, texts in corpora.items():
        for name, f in filters.items():
            n, reasons = dropped(f, texts)
            rates[f"{corpus}_{name}"] = n / len(texts)
            print(f"{corpus:5s} {name:12s} dropped {n:5d}/{len(texts)} = {n / len(texts):.3%}  {dict(reasons)}")
    rejected = {}
    for name, f in filters.items():
        kept = [(lang, t) for lang, t in foreign if f({"text": t}) is None]
        rejected[name] = len(foreign) - len(kept)
        print(f"not English, {name:12s}: rejected {rejected[name]}/{len(foreign)}; kept {kept}")
    print(
        f"RESULT langid docs_before={rates['docs_before']:.4f} docs_after={rates['docs_after']:.4f} "
        f"sst2_before={rates['sst2_before']:.4f} sst2_after={rates['sst2_after']:.4f} "
        f"foreign_rejected_before={rejected['before']}/{len(foreign)} "
        f"foreign_rejected_after={rejected['after']}/{len(foreign)}"
    )


if __name__ == "__main__":
    main()
