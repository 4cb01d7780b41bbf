"""Incremental re-crawls (conditional requests) and resuming a crawl killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from crawl_site import Site, page, prose, send
from lmchain.artifacts import RunContext, read_jsonl
from lmchain.stages.collect import run
from lmchain.config import CollectConfig, CrawlConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_site(site: Site, n: int, validators: bool = True) -> None:
    for i in range(n):
        links = [f"/p{(i + 1) % n}.html", f"/p{(i * 7 + 3) % n}.html"]
        site.add(f"/p{i}.html", page(f"Page {i}", *prose(f"topic {i}"), links=links), validators=validators)


@pytest.mark.parametrize("validators", [True, False], ids=["etag-304", "no-validators"])
def test_recrawl_fetches_no_bodies_and_emits_only_the_changed_page(tmp_path, validators):
    with Site() as site:
        small_site(site, 6, validators)
        cfg = CollectConfig(crawl=CrawlConfig(seeds=[site.url + "/p0.html"], max_depth=10, allow_networks=["127.0.0.1"],
                                              state_path=str(tmp_path / "state.sqlite")))
        home = tmp_path / "home"
        first = run(cfg, RunContext("run1", home=home))
        assert first.counts["crawl_docs"] == 6
        before = len(site.hits())

        second = run(cfg, RunContext("run2", home=home))
        again = [h for h in site.hits()[before:] if h.path.startswith("/p")]
        assert len(again) == 6  # every page asked again ...
        if validators:  # ... conditionally: no body came back
            assert {h.status for h in again} == {304}
            assert all(h.headers.get("If-None-Match") and h.headers.get("If-Modified-Since") for h in again)
        assert second.counts["records"] == 0 and second.counts["crawl_unchanged"] == 6

        site.change("/p3.html", page("Page 3", "A new first paragraph, written after the first crawl, "
                                     "long enough to be kept.", *prose("topic 3"), links=["/p4.html"]))
        third = run(cfg, RunContext("run3", home=home))
        records = list(read_jsonl(third.outputs["records"]))
        assert [r["url"] for r in records] == [site.url + "/p3.html"]
        assert "A new first paragraph" in records[0]["text"] and third.counts["crawl_unchanged"] == 5


def collect_cli(site_url: str, out, state, home) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lmchain.cli", "collect", "--seed", site_url + "/p0.html", "--max-pages", "200",
           "--max-depth", "20", "--concurrency", "4", "--out", str(out), "--state", str(state),
           "--allow-network", "127.0.0.1"]
    env = {**os.environ, "LMCHAIN_HOME": str(home), "PYTHONPATH": REPO}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def slow_page(req, route, site):
    site._record(req, 200)
    time.sleep(0.03)  # slow enough that the kill lands mid-crawl
    send(req, 200, route.body, route.content_type)


def test_resume_after_kill_9_equals_an_uninterrupted_crawl(tmp_path):
    n = 40
    with Site() as site:
        small_site(site, n)
        for route in site.routes.values():
            route.handler = slow_page

        proc = collect_cli(site.url, tmp_path / "out", tmp_path / "state.sqlite", tmp_path / "home")
        deadline = time.monotonic() + 60
        while len([h for h in site.hits() if h.path.startswith("/p")]) < 12:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the crawl did not start"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = Counter(h.path for h in site.hits() if h.path.startswith("/p"))
        assert sum(killed_at.values()) < n, "the crawl finished before the kill; slow the site down"
        assert not (tmp_path / "out").exists()  # no half output that looks complete

        resumed = collect_cli(site.url, tmp_path / "out", tmp_path / "state.sqlite", tmp_path / "home")
        log = resumed.communicate(timeout=120)[0]
        assert resumed.returncode == 0 and "(resumed)" in log, log
        total = Counter(h.path for h in site.hits() if h.path.startswith("/p"))
        refetched = [p for p, c in total.items() if c > 1]
        assert len(refetched) <= 4  # at most the requests in flight at the kill (--concurrency 4)

        reference = collect_cli(site.url, tmp_path / "ref", tmp_path / "ref.sqlite", tmp_path / "home")
        assert reference.wait(timeout=120) == 0

    got = [(r["url"], r["sha256"]) for r in read_jsonl(tmp_path / "out" / "records.jsonl")]
    want = [(r["url"], r["sha256"]) for r in read_jsonl(tmp_path / "ref" / "records.jsonl")]
    assert len(got) == len(set(got)) == n  # no duplicates, nothing missing
    assert sorted(got) == sorted(want)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["records"] == n and manifest["counts"]["rejects"] == 0
