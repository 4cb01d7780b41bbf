import functools
import http.server
import json
import threading

import pytest

from conftest import write_lines
from lmchain.artifacts import read_jsonl
from lmchain.collect import run
from lmchain.collect.crawl import html_to_text
from lmchain.config import CollectConfig, FileSource
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


def test_html_to_text_skips_scripts_and_finds_links():
    title, text, links = html_to_text(
        "<html><head><title>T</title><script>var x=1</script></head>"
        "<body><p>Hello <b>world</b></p><a href='/next.html'>next</a><style>p{}</style></body></html>")
    assert title == "T" and "Hello world" in text and "var x" not in text and links == ["/next.html"]


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
    m = run(CollectConfig(crawl_seeds=[site + "/index.html"], crawl_max_pages=10), ctx)
    recs = {r["url"]: r for r in read_jsonl(m.outputs["records"])}
    assert set(recs) == {site + "/index.html", site + "/a.html"}
    assert "Welcome to the index page." in recs[site + "/index.html"]["text"]
    assert recs[site + "/index.html"]["meta"]["title"] == "Home"
    rejects = {r["url"]: r["reason"] for r in read_jsonl(m.outputs["rejects"])}
    assert rejects == {site + "/private/secret.html": "robots_disallowed", site + "/missing.html": "http_404"}
    assert m.counts["from_web"] == 2
