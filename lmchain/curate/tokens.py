"""English words and sentences exactly as datatrove's web-document filters count them.

datatrove splits English text with spaCy's tokenizer (affix rules, infixes, special cases such
as ``don't -> do n't``) and counts sentences with spaCy's sentencizer. Thresholds like "at least
50 words" or "5 sentences" only mean the same thing if the counting is the same, so this module
runs spaCy's own rules (copied into ``tables.py`` by ``make_tables.py``) with plain ``re`` and a
per-process cache of whitespace-separated chunks: most chunks of a corpus repeat, and spaCy's
per-call lexeme creation, not the rules, is what makes datatrove slow.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from lmchain.curate.tables import TABLES

PUNCTUATION_SET = frozenset(TABLES["punctuation"])
TERMINAL_PUNCTUATION = tuple(TABLES["terminal_punctuation"])
_SENTENCE_PUNCT = frozenset(TABLES["sentence_punct"])
_PREFIX = re.compile(TABLES["prefix"]).search
_SUFFIX = re.compile(TABLES["suffix"]).search
_INFIX = re.compile(TABLES["infix"]).finditer
_URL = re.compile(TABLES["url"]).match
_SPECIALS: dict[str, list[str]] = TABLES["specials"]
_CACHE_LIMIT = 200_000


def _split_affixes(string: str, prefixes: list[str], suffixes: list[str], specials: dict) -> str:
    """spaCy's ``Tokenizer._split_affixes``, step for step."""
    last_size = -1
    while string and len(string) != last_size:
        if string in specials:
            break
        last_size = len(string)
        m = _PREFIX(string)
        pre_len = m.end() if m else 0
        if pre_len:
            prefix, minus_pre = string[:pre_len], string[pre_len:]
            if minus_pre and minus_pre in specials:
                prefixes.append(prefix)
                return minus_pre
        m = _SUFFIX(string[pre_len:])
        suf_len = len(string) - pre_len - m.start() if m else 0
        if suf_len:
            suffix, minus_suf = string[-suf_len:], string[:-suf_len]
            if minus_suf and minus_suf in specials:
                suffixes.append(suffix)
                return minus_suf
        if pre_len and suf_len and pre_len + suf_len <= len(string):
            string = string[pre_len:-suf_len]
            prefixes.append(prefix)
            suffixes.append(suffix)
        elif pre_len:
            string = minus_pre
            prefixes.append(prefix)
        elif suf_len:
            string = minus_suf
            suffixes.append(suffix)
    return string


def _tokenize_chunk(chunk: str, specials: dict = _SPECIALS) -> list[str]:
    """One whitespace-free chunk -> spaCy tokens (``Tokenizer._tokenize`` + ``_attach_tokens``)."""
    if chunk in specials:
        return list(specials[chunk])
    prefixes: list[str] = []
    suffixes: list[str] = []
    string = _split_affixes(chunk, prefixes, suffixes, specials)
    out = prefixes
    if string:
        if string in specials:
            out.extend(specials[string])
        elif _URL(string):
            out.append(string)
        else:
            start = 0
            for match in _INFIX(string):
                infix_start, infix_end = match.start(), match.end()
                if infix_start == 0:
                    continue
                if infix_start != start:
                    out.append(string[start:infix_start])
                if infix_start != infix_end:
                    out.append(string[infix_start:infix_end])
                start = infix_end
            if string[start:]:
                out.append(string[start:])
    out.extend(reversed(suffixes))
    return out


def _special_phrases() -> dict[tuple[str, ...], str]:
    """Special cases that the affix rules split (emoticons like ``):``): spaCy's second pass
    (``_apply_special_cases``) finds their pieces in the token stream and merges them back."""
    phrases = {}
    for key in _SPECIALS:
        if _PREFIX(key) or _SUFFIX(key) or any(True for _ in _INFIX(key)) or " " in key:
            pieces = tuple(_tokenize_chunk(key, {}))
            if len(pieces) > 1:
                phrases[pieces] = key
    return phrases


_PHRASES = _special_phrases()
_PHRASE_LENGTHS = sorted({len(p) for p in _PHRASES}, reverse=True)
_PHRASE_FIRST = frozenset(p[0] for p in _PHRASES)


def _merge_special_phrases(toks: list[str]) -> list[str]:
    """spaCy's ``_filter_special_spans``: longest match first, then earliest start, no overlap."""
    found = [(n, i) for i in range(len(toks)) if toks[i] in _PHRASE_FIRST
             for n in _PHRASE_LENGTHS if i + n <= len(toks) and tuple(toks[i:i + n]) in _PHRASES]
    if not found:
        return toks
    taken: set[int] = set()
    spans = {}
    for n, i in sorted(found, key=lambda m: (-m[0], m[1])):
        if i not in taken and i + n - 1 not in taken:
            spans[i] = n
        taken.update(range(i, i + n))
    out, i = [], 0
    while i < len(toks):
        if i in spans:
            out.extend(_SPECIALS[_PHRASES[tuple(toks[i:i + spans[i]])]])
            i += spans[i]
        else:
            out.append(toks[i])
            i += 1
    return out


_cache: dict[str, list[str]] = {}


def chunk_tokens(chunk: str) -> list[str]:
    toks = _cache.get(chunk)
    if toks is None:
        if chunk.isalpha() and chunk.isascii() and chunk not in _SPECIALS:
            toks = [chunk]  # the common case: no affix, infix or special case can apply
        else:
            toks = _tokenize_chunk(chunk)
            if len(toks) > 1:
                toks = _merge_special_phrases(toks)
            toks = [t.strip() for t in toks]
            toks = [t for t in toks if t]
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()  # bounded memory on corpora with endless unique chunks (code, ids)
        _cache[chunk] = toks
    return toks


def words(text: str) -> list[str]:
    """datatrove's ``split_into_words(text, "eng")``: spaCy tokens, whitespace tokens dropped."""
    out: list[str] = []
    for chunk in text.split():
        out.extend(chunk_tokens(chunk))
    return out


@lru_cache(maxsize=65536)
def _is_punct(token: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in token)


_CHUNKS = re.compile(r"\S+|\s+")


def _tokens_with_spaces(line: str):
    """spaCy tokens including its whitespace tokens: a gap other than one ' ' is a token too."""
    for chunk in _CHUNKS.findall(line):
        if chunk[0].isspace():
            if chunk != " ":
                yield chunk
        else:
            yield from chunk_tokens(chunk)


def count_sentences(line: str) -> int:
    """Sentences in ``line`` by spaCy's sentencizer, as datatrove's ``split_into_sentences`` counts
    them: a sentence ends after a sentence-final punctuation token, once a token follows that is
    not punctuation (so ``"Wait!! Go."`` is two, ``"Hi..."`` one)."""
    count = 1
    seen_period = False
    for tok in _tokens_with_spaces(line):
        in_punct = tok in _SENTENCE_PUNCT
        if seen_period and not in_punct and not _is_punct(tok):
            count += 1
            seen_period = False
        elif in_punct:
            seen_period = True
    return count
