"""Web-document filters on literal texts, at the boundaries of their published thresholds.

Expected values were checked against datatrove 0.10.1's filters (spaCy tokenizer) when written:
the filters must decide as datatrove does, not only as the papers describe.
"""

import numpy as np
import pytest

from lmchain.curate.filters import (C4Quality, FineWebQuality, GopherQuality, GopherRepetition,
                                    repeated_ngram_chars, top_ngram_chars)
from lmchain.curate.tokens import count_sentences, words


def ids_and_lengths(tokens):
    vocab = {}
    ids = np.array([vocab.setdefault(t, len(vocab)) for t in tokens], dtype=np.uint64)
    return ids, np.array([len(t) for t in tokens])


# ------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize("text, expected", [
    ("Don't stop: f(x): the end...", ["Do", "n't", "stop", ":", "f(x", "):", "the", "end", "..."]),
    ("e.g. the U.S. well-known 3.14 it's cannot",
     ["e.g.", "the", "U.S.", "well", "-", "known", "3.14", "it", "'s", "can", "not"]),
    ("Visit http://x.org/a.b now!", ["Visit", "http://x.org/a.b", "now", "!"]),
    ("l[:] and ':)' hi:)", ["l", "[:", "]", "and", "'", ":)", "'", "hi", ":)"]),
])
def test_words_follow_spacy_english_rules(text, expected):
    assert words(text) == expected


@pytest.mark.parametrize("line, n", [("Wait!! Go now. Then stop", 3), ("Hi... there", 1),
                                     ("Mr. Smith went to Washington. He left.", 2),
                                     ("newline.  . is often used", 3)])
def test_sentences_follow_spacy_sentencizer(line, n):
    assert count_sentences(line) == n


# ------------------------------------------------------------------------------ Gopher repetition


def test_top_ngram_ties_go_to_the_first_seen():
    ids, lengths = ids_and_lengths(["aa", "b", "c", "aa", "b", "c"])
    assert top_ngram_chars(ids, lengths, 2) == len("aa b") * 2  # "aa b" and "b c" both occur twice


def test_repeated_ngrams_jump_over_a_repeat():
    ids, lengths = ids_and_lengths("a b c a b c a b c".split())
    assert repeated_ngram_chars(ids, lengths, 3) == 6


def only(**checks):
    off = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
               top_n_grams=[], dup_n_grams=[])
    return GopherRepetition(**{**off, **checks})


def test_duplicate_line_fraction_boundary():
    distinct = [f"line {w} of the text" for w in "one two three four five six seven".split()]
    at = "\n".join(distinct + distinct[:3])  # 3 of 10 lines repeat: 0.3 is not above 0.3
    over = "\n".join(distinct[:6] + distinct[:4])  # 4 of 10
    assert only(dup_line_frac=0.3).check(at) is None
    assert only(dup_line_frac=0.3).check(over) == "dup_line_frac"


def test_duplicate_paragraph_fraction_and_defaults():
    paras = ["First paragraph here.", "Second one.", "Third one.", "First paragraph here."]
    assert only(dup_para_frac=0.3).check("\n\n".join(paras)) is None  # 1 of 4
    assert only(dup_para_frac=0.2).check("\n\n".join(paras)) == "dup_para_frac"
    spam = "buy cheap watches now " * 30
    assert GopherRepetition().check(spam) == "top_2_gram"
    assert GopherRepetition().check("") == "empty"


# ------------------------------------------------------------------------------ Gopher quality


def doc_of(n_words, word="house", stop=("the", "and")):
    return " ".join(list(stop) + [word] * (n_words - len(stop))) + "."


def test_gopher_quality_word_count_boundary():
    assert GopherQuality().check(doc_of(50)) is None
    assert GopherQuality().check(doc_of(49)) == "short_doc"
    assert GopherQuality(max_doc_words=60).check(doc_of(61)) == "long_doc"


def test_gopher_quality_mean_word_length_boundaries():
    assert GopherQuality().check(doc_of(50, "cat")) is None  # mean exactly 3
    assert GopherQuality().check(doc_of(50, "cat") .replace("cat", "of", 1)) == "below_avg_threshold"
    assert GopherQuality(min_stop_words=None).check(doc_of(50, "x" * 10, stop=())) is None  # exactly 10
    assert GopherQuality(min_stop_words=None).check(doc_of(50, "x" * 11, stop=())) == "above_avg_threshold"


def test_gopher_quality_hash_ratio_boundary():
    base = " ".join(["the", "and"] + ["house"] * 52)
    assert GopherQuality().check(base + " #" * 6) is None  # 6 hashes / 60 words = 0.1
    assert GopherQuality().check(base + " #" * 7) == "too_many_hashes"


def test_gopher_quality_stop_words_and_alpha():
    assert GopherQuality().check(doc_of(50, stop=("the", "and"))) is None
    assert GopherQuality().check(doc_of(50, stop=("the", "The"))) == "enough_stop_words"  # case-sensitive
    digits = " ".join(["the", "and"] + ["house"] * 38 + ["12345"] * 11)  # 40/51 words with a letter
    assert GopherQuality().check(digits) == "below_alpha_threshold"


def test_gopher_quality_bullets_and_ellipsis_lines():
    bullets = "\n".join(f"- the item and number {w} is here" for w in "abcdefghij" * 2)
    assert GopherQuality().check(bullets) == "too_many_bullets"
    ellipses = "\n".join(f"the story and then {w} went on..." for w in "abcdefghijkl")
    assert GopherQuality(max_symbol_word_ratio=None).check(ellipses) == "too_many_end_ellipsis"


# ------------------------------------------------------------------------------ C4


def sentences(n):
    return "\n".join(f"This is sentence number {w} of the page." for w in "abcdefghij"[:n])


def test_c4_sentence_count_boundary():
    assert C4Quality().check(sentences(5))[0] is None
    assert C4Quality().check(sentences(4))[0] == "too_few_sentences"


def test_c4_line_rules_and_kept_text():
    text = "\n".join([sentences(5), "Enable JavaScript to see this page.", "no terminal punctuation here",
                      "We use cookies. Read our privacy policy.", "Two words.", "A cited claim is here.[1]"])
    reason, kept = C4Quality().check(text)
    assert reason is None
    assert kept == sentences(5) + "\nA cited claim is here."
    reason, kept = C4Quality(filter_no_terminal_punct=False).check(text)
    assert "no terminal punctuation here" in kept


def test_c4_document_rules():
    assert C4Quality().check(sentences(5) + "\nCall f(x) { return 1; } now.")[0] == "curly_bracket"
    assert C4Quality().check(sentences(5) + "\nLorem ipsum dolor sit amet.")[0] == "lorem_ipsum"
    rec = {"text": sentences(6) + "\nno punctuation line"}
    assert C4Quality()(rec) is None and rec["text"] == sentences(6)


# ------------------------------------------------------------------------------ FineWeb


def lines(n, punct):
    return "\n".join(f"line {w} says something about the topic at length" + ("." if i < punct else "")
                     for i, w in enumerate(f"w{i}" for i in range(n)))


def test_fineweb_line_punctuation_boundary():
    assert FineWebQuality().check(lines(25, 3)) is None  # 3/25 = 0.12
    assert FineWebQuality().check(lines(25, 2)) == "line_punct_ratio"


def test_fineweb_short_lines_duplicates_and_lists():
    short = "\n".join(["A long enough line that ends with a full stop here."] + [f"short {i}." for i in range(3)])
    assert FineWebQuality().check(short) == "short_line_ratio"  # 3/4 > 0.67
    dup = lines(20, 20) + "\n" + "line w0 says something about the topic at length."
    assert FineWebQuality().check(dup) == "char_dup_ratio"
    listy = "\n".join(f"item {i}\nhas value {i}." for i in range(10))  # 19 newlines / 60 words
    assert FineWebQuality(short_line_thr=1.0).check(listy) == "list_ratio"


def test_config_defaults_are_the_filters_published_defaults():
    from lmchain.config import C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig

    for config, step in [(GopherQualityConfig, GopherQuality), (C4Config, C4Quality), (FineWebConfig, FineWebQuality)]:
        defaults = {k: v for k, v in config().model_dump().items() if k != "enabled"}
        assert defaults == {k: getattr(step(), k) for k in defaults}, config.__name__
    rep = GopherRepetitionConfig()
    assert [tuple(p) for p in rep.top_n_grams] == GopherRepetition().top_n_grams
    assert [tuple(p) for p in rep.dup_n_grams] == GopherRepetition().dup_n_grams
    assert rep.dup_line_frac == GopherRepetition().dup_line_frac == 0.3
