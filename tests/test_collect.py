import functools
import http.server
import json
import sys
import threading

import pytest

from conftest import write_lines
from lmchain.artifacts import read_jsonl
from lmchain.stages.collect import run
from lmchain.collect.extract import extract
from lmchain.config import CollectConfig, CrawlConfig, FileSource
from lmchain.errors import InputError


def test_reads_all_formats_and_keeps_bad_lines_as_rejects(ctx, tmp_path):
    write_lines(tmp_path / "a.txt", ["first line of text", "second line of text"])
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"body": "json text", "lang": "en"}) + "\n{not json\n" + json.dumps({"other": 1}) + "\n")
    write_lines(tmp_path / "c.csv", ["id,content", '1,"quoted, with comma"', "2,plain"])
    write_lines(tmp_path / "d.tsv", ["sentence\tlabel", "tab separated\t1", "broken row"])
    cfg = CollectConfig(files=[
        FileSource(path=str(tmp_path / "a.txt")),
        FileSource(path=str(tmp_path / "b.jsonl"), text_field="body"),
        FileSource(path=str(tmp_path / "c.csv"), text_field="content"),
        FileSource(path=str(tmp_path / "d.tsv"), text_field="sentence"),
    ])
    m = run(cfg, ctx)
    recs = list(read_jsonl(m.outputs["records"]))
    texts = [r["text"] for r in recs]
    assert texts == ["first line of text", "second line of text", "json text", "quoted, with comma", "plain",
                     "tab separated"]
    assert recs[2]["meta"] == {"lang": "en"} and recs[5]["meta"] == {"label": "1"}
    assert all(r["sha256"] and r["id"] and r["fetched_at"] and r["url"].startswith("file://") for r in recs)
    rejects = list(read_jsonl(m.outputs["rejects"]))
    assert sorted(r["reason"].split(":")[0] for r in rejects) == ["bad_json", "bad_row", "missing_text_field"]
    assert m.counts["records"] == 6 and m.counts["rejects"] == 3
    assert m.drop_reasons == {"bad_json": 1, "missing_text_field": 1, "bad_row": 1}


def test_limit_and_glob(ctx, tmp_path):
    for i in range(3):
        write_lines(tmp_path / f"part{i}.txt", [f"doc {i} line {j}" for j in range(5)])
    m = run(CollectConfig(files=[FileSource(path=str(tmp_path / "part*.txt"), limit=7)]), ctx)
    assert m.counts["records"] == 7


def test_missing_file_names_the_file(ctx, tmp_path):
    with pytest.raises(InputError, match=r"input file .*nope\.tsv does not exist"):
        run(CollectConfig(files=[FileSource(path=str(tmp_path / "nope.tsv"))]), ctx)
    assert not ctx.stage_dir("collect").exists()


def test_missing_column_names_file_and_columns(ctx, tmp_path):
    write_lines(tmp_path / "x.tsv", ["text_col\tlabel", "hello\t1"])
    with pytest.raises(InputError, match=r"x\.tsv has no column 'sentence' \(columns: text_col, label\)"):
        run(CollectConfig(files=[FileSource(path=str(tmp_path / "x.tsv"), text_field="sentence")]), ctx)


def test_non_utf8_file_is_an_input_error(ctx, tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin.txt is not UTF-8"):
        run(CollectConfig(files=[FileSource(path=str(tmp_path / "latin.txt"))]), ctx)


def test_extract_skips_scripts_and_finds_links():
    para = "<p>Hello <b>world</b>, this paragraph is long enough to count as the main content of the page.</p>"
    ex = extract("<html lang='en'><head><title>T</title><script>var x=1</script></head>"
                 f"<body><article>{para * 3}</article><a href='/next.html#top'>next</a><a href='mailto:a@b'>m</a>"
                 "<style>p{}</style></body></html>", "http://h/dir/page.html")
    assert ex.title == "T" and "Hello world, this paragraph" in ex.text and "var x" not in ex.text
    assert ex.links == ["http://h/next.html#top"] and ex.language == "en"


def test_markdown_html_parquet_and_folders(ctx, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\n\nInstall it, then run it.\n")
    (docs / "sub" / "page.html").write_bytes(
        "<html><head><title>Caf\xe9</title></head><body><p>Un caf\xe9 cr\xe8me, s'il vous pla\xeet.</p>"
        "<script>x()</script></body></html>".encode("latin-1"))
    (docs / "sub" / "empty.md").write_text("")
    (docs / "ignored.bin").write_bytes(b"\0\1")
    pq.write_table(pa.table({"body": ["row one text", None, "row three text"], "n": [1, 2, 3]}),
                   tmp_path / "t.parquet")
    m = run(CollectConfig(files=[FileSource(path=str(docs)),
                                 FileSource(path=str(tmp_path / "*.parquet"), text_field="body")]), ctx)
    recs = list(read_jsonl(m.outputs["records"]))
    assert [r["text"] for r in recs] == ["Install it, then run it.".join(["# Guide\n\n", ""]),
                                         "Un caf\xe9 cr\xe8me, s'il vous pla\xeet.", "row one text", "row three text"]
    assert recs[0]["meta"]["title"] == "Guide" and recs[1]["meta"]["title"] == "Caf\xe9"
    assert recs[2]["meta"] == {"n": 1} and recs[3]["url"].endswith("t.parquet#L3")
    assert sorted(r["reason"].split(":")[0] for r in read_jsonl(m.outputs["rejects"])) == \
        ["empty_text", "missing_text_field"]


def _save_dataset_like_datasets_does(folder, rows: dict) -> None:
    """The save_to_disk layout: Arrow IPC stream files named in state.json."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    table = pa.table(rows)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")


def test_saved_dataset_folder_without_the_datasets_package(ctx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without the package
    root = tmp_path / "ds"
    _save_dataset_like_datasets_does(root / "train", {"sentence": ["a saved sentence", "another one"], "label": [1, 0]})
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    m = run(CollectConfig(files=[FileSource(path=str(root), text_field="sentence")]), ctx)
    recs = list(read_jsonl(m.outputs["records"]))
    assert [(r["text"], r["meta"]) for r in recs] == [("a saved sentence", {"label": 1}), ("another one", {"label": 0})]
    with pytest.raises(InputError, match="has splits \\['train'\\], not 'test'"):
        run(CollectConfig(files=[FileSource(path=str(root), text_field="sentence", split="test")]), ctx)


def test_saved_dataset_through_the_datasets_package(ctx, tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["x one", "x two", "x three"]}).select([2, 0]).save_to_disk(str(tmp_path / "d"))
    m = run(CollectConfig(files=[FileSource(path=str(tmp_path / "d"))]), ctx)
    assert [r["text"] for r in read_jsonl(m.outputs["records"])] == ["x three", "x one"]
    # The pyarrow reader (no `datasets`) reads the real save_to_disk layout the same way.
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "datasets", None)
        m = run(CollectConfig(files=[FileSource(path=str(tmp_path / "d"))]), ctx)
    assert [r["text"] for r in read_jsonl(m.outputs["records"])] == ["x three", "x one"]


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    (root / "private").mkdir(parents=True)
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    (root / "index.html").write_text("<html><title>Home</title><body><p>Welcome to the index page.</p>"
                                     "<a href='a.html'>a</a> <a href='private/secret.html'>s</a>"
                                     "<a href='missing.html'>m</a> <a href='http://elsewhere.invalid/'>x</a>"
                                     "</body></html>")
    (root / "a.html").write_text("<html><body><p>Page a has some text.</p><a href='index.html'>home</a></body></html>")
    (root / "private" / "secret.html").write_text("<p>secret</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_crawl_local_site_respects_robots_and_records_failures(ctx, site):
    cfg = CollectConfig(crawl=CrawlConfig(seeds=[site + "/index.html"], max_pages=10, allow_private_networks=True,
                                          state_path=str(ctx.home / "crawl.sqlite")))
    m = run(cfg, ctx)
    recs = {r["url"]: r for r in read_jsonl(m.outputs["records"])}
    assert set(recs) == {site + "/index.html", site + "/a.html"}
    assert "Welcome to the index page." in recs[site + "/index.html"]["text"]
    assert recs[site + "/index.html"]["meta"]["title"] == "Home"
    rejects = {r["url"]: r["reason"] for r in read_jsonl(m.outputs["rejects"])}
    assert rejects == {site + "/private/secret.html": "robots_disallowed", site + "/missing.html": "http_404"}
    # A retried task (same run id) reuses the finished crawl: same output, nothing fetched again.
    again = run(cfg, ctx)
    assert again.hashes["records"] == m.hashes["records"] and again.info["crawl"]["state"] == "finished"
    assert m.counts["from_web"] == 2
