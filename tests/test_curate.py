from conftest import write_records
from lmchain.artifacts import read_jsonl
from lmchain.config import CurateConfig
from lmchain.curate import run
from lmchain.curate.steps import normalize_text


def test_normalize_text():
    assert normalize_text("  ﬁne\u200b   wine\t here \r\n\r\n\n next\x07 ") == "fine wine here\nnext"


def test_curate_counts_reasons_and_keeps_rejects(ctx, tmp_path):
    texts = ["A good long sentence here.", "a  good long sentence here.", "A good long sentence here.",
             "short", "two words", "x" * 50, "   ", "Another fine sentence to keep."]
    src = write_records(tmp_path / "in.jsonl",
                        [{"id": str(i), "text": t, "source": "file"} for i, t in enumerate(texts)])
    m = run(CurateConfig(min_chars=10, max_chars=40, min_words=3), ctx,
            {"collect": {"outputs": {"records": str(src)}}})
    kept = [r["text"] for r in read_jsonl(m.outputs["records"])]
    assert kept == ["A good long sentence here.", "a good long sentence here.", "Another fine sentence to keep."]
    assert m.drop_reasons == {"exact_duplicate": 1, "too_short": 2, "too_long": 1, "empty": 1}
    rejects = list(read_jsonl(m.outputs["rejects"]))
    assert len(rejects) == m.counts["rejects"] == 5
    dup = next(r for r in rejects if r["reason"] == "exact_duplicate")
    assert dup["duplicate_of"] == "0" and dup["text"] == "A good long sentence here."
    assert m.counts == {"input": 8, "records": 3, "rejects": 5}
