"""The curate stage end to end on small inline corpora: reasons, rejects, history, CLI, workers."""

import json
import random

import pytest
from conftest import write_records

from lmchain.artifacts import RunContext, read_jsonl
from lmchain.cli import main
from lmchain.config import CurateConfig, build, load_config
from lmchain.stages.curate import run
from lmchain.errors import ConfigError

SENTENCES = {"gopher_repetition": {"enabled": False}, "gopher_quality": {"enabled": False},
             "c4": {"enabled": False}, "fineweb": {"enabled": False}}


def sentence_config(**extra) -> CurateConfig:
    """The demo's choice for corpora of single sentences: web-document filters off."""
    return build(CurateConfig, {**SENTENCES, "workers": 1, **extra}, "curate")


def curate(ctx, tmp_path, texts, cfg):
    src = write_records(tmp_path / "in.jsonl",
                        [{"id": str(i), "text": t, "source": "file"} for i, t in enumerate(texts)])
    return run(cfg, ctx, {"collect": {"outputs": {"records": str(src)}}})


def test_curate_counts_reasons_and_keeps_rejects(ctx, tmp_path):
    texts = ["A good long sentence here.", "a  good long sentence here!", "A good long sentence here.",
             "short", "two words", "x" * 50, "   ", "Another fine sentence to keep.",
             "Mail the results to jane.doe@example.org today please."]
    m = curate(ctx, tmp_path, texts, sentence_config(min_chars=10, max_chars=60, min_words=3))
    kept = [r["text"] for r in read_jsonl(m.outputs["records"])]
    assert kept == ["A good long sentence here.", "Another fine sentence to keep.",
                    "Mail the results to <EMAIL> today please."]
    assert m.drop_reasons == {"exact_duplicate": 1, "near_duplicate": 1, "too_short": 2, "too_few_words": 1,
                              "empty": 1}
    rejects = list(read_jsonl(m.outputs["rejects"]))
    assert len(rejects) == m.counts["rejects"] == 6
    exact = next(r for r in rejects if r["reason"] == "exact_duplicate")
    assert exact["duplicate_of"] == "0" and exact["text"] == "A good long sentence here."
    near = next(r for r in rejects if r["reason"] == "near_duplicate")
    assert near["duplicate_of"] == "0" and near["text"] == "a  good long sentence here!"  # as collected
    assert m.counts == {"input": 9, "records": 3, "rejects": 6, "pii_email": 1}


def test_web_filters_drop_single_sentences_by_default(ctx, tmp_path):
    m = curate(ctx, tmp_path, ["A perfectly fine sentence that is short."], build(CurateConfig, {"workers": 1}))
    # Gopher repetition runs first: in a 7-word text any 2-gram covers over 20% of the characters.
    assert m.counts["records"] == 0 and m.drop_reasons == {"gopher_repetition:top_2_gram": 1}


def test_history_dedups_against_earlier_runs_and_reruns_are_idempotent(tmp_path):
    home = tmp_path / "home"
    cfg = sentence_config(history="sst")
    first = ["The first run keeps this sentence about films.", "And this one about long novels too."]
    second = ["The first run keeps this sentence about films.", "A brand new sentence about music.",
              "And this one about long novels too!"]
    m1 = curate(RunContext("r1", home=home), tmp_path, first, cfg)
    assert m1.counts["records"] == 2
    m2 = curate(RunContext("r2", home=home), tmp_path, second, cfg)
    assert [r["text"] for r in read_jsonl(m2.outputs["records"])] == ["A brand new sentence about music."]
    assert m2.drop_reasons == {"exact_duplicate": 1, "near_duplicate": 1}
    assert {r["duplicate_of"] for r in read_jsonl(m2.outputs["rejects"])} == {"earlier run"}
    again = curate(RunContext("r1", home=home), tmp_path, first, cfg)  # a retry of run r1
    assert again.counts["records"] == 2 and again.hashes["records"] == m1.hashes["records"]
    other_index = curate(RunContext("r3", home=home), tmp_path, second, sentence_config(history="other"))
    assert other_index.counts["records"] == 3


def test_decontamination_drops_texts_sharing_a_13_gram_with_eval_sets(ctx, tmp_path):
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"text": "the quick brown fox jumps over the lazy dog near the quiet river "
                                         "bank today"}) + "\n" + json.dumps({"text": "Short eval line."}) + "\n")
    texts = ["Intro words, then THE QUICK brown fox jumps over the lazy dog near the quiet river bank again.",
             "the quick brown fox jumps over the lazy dog near the quiet lake twelve words shared only",
             "short eval line",
             "A short eval line with more words."]
    m = curate(ctx, tmp_path, texts, sentence_config(decontaminate={"paths": [str(evals)]}))
    assert m.drop_reasons == {"decontaminated": 2}
    assert m.info["eval_texts"] == 2
    assert [r["text"] for r in read_jsonl(m.outputs["records"])] == texts[1::2]


def test_two_workers_give_the_same_output_as_one(tmp_path):
    rng = random.Random(0)
    vocab = "film plot actor scene music story light camera drama comedy score ending pace cast".split()
    texts = [" ".join(rng.choice(vocab) for _ in range(12)) + "." for _ in range(300)]
    texts += texts[:50]
    one = curate(RunContext("a", home=tmp_path / "h1"), tmp_path, texts, sentence_config(chunk_size=40))
    two = curate(RunContext("b", home=tmp_path / "h2"), tmp_path, texts,
                 sentence_config(chunk_size=40, workers=2))
    assert one.hashes == two.hashes and one.counts == two.counts
    assert one.drop_reasons["exact_duplicate"] == 50 and one.counts["records"] > 200


def test_cli_curate_with_recipe(tmp_path, capsys):
    src = write_records(tmp_path / "records.jsonl", [
        {"id": "1", "text": "a gorgeous , witty , seductive movie .", "source": "file"},
        {"id": "2", "text": "a gorgeous , witty , seductive movie", "source": "file"},
        {"id": "3", "text": "ok", "source": "file"}])
    out = tmp_path / "curated"
    assert main(["curate", "--in", str(tmp_path), "--out", str(out), "--config", "demo",
                 "--set", "curate.workers=1"]) == 0
    assert "3 in -> 1 kept" in capsys.readouterr().out
    assert [r["id"] for r in read_jsonl(out / "records.jsonl")] == ["1"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["drop_reasons"] == {"near_duplicate": 1, "too_short": 1} and src.is_file()
    assert main(["curate", "--in", str(tmp_path / "nothing"), "--out", str(out)]) == 2


@pytest.mark.parametrize("override, message", [
    ("curate.language.min_score=1.5", "curate.language.min_score"),
    ("curate.near_dedup.bands=0", "curate.near_dedup.bands"),
    ("curate.pii.kinds=[email, ssn]", "curate.pii.kinds.*ssn"),
    ("curate.pii.patterns=[{name: Bad Name, regex: x}]", "patterns"),
    ("curate.pii.patterns=[{name: emp, regex: '(unclosed'}]", "not a valid regular expression"),
    ("curate.gopher_repetition.top_n_grams=[[2.5, 0.2]]", "curate.gopher_repetition.top_n_grams"),
    ("curate.history=../escape", "curate.history"),
    ("curate.decontaminate.ngram=2", "curate.decontaminate.ngram"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])
