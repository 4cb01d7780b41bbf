"""One LMCHAIN_HOME, many runs at once: real processes running the real collect stage side by side.

Each process enters the stage (its temp folder exists), then waits at a barrier until the other
one has entered too, so the two attempts truly overlap instead of running one after the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env, write_lines
from crawl_site import Site, page, prose, send
from lmchain.artifacts import (Manifest, RunContext, StageOutput, read_jsonl, remove_stale_attempts, write_json,
                               write_jsonl_atomic)
from lmchain.errors import InputError

WORKER = r"""
import json, sys, time
from pathlib import Path

import lmchain.stages.collect as collect
from lmchain.artifacts import RunContext
from lmchain.config import CollectConfig, build

barrier, name, run_id, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
real = collect._collect


def at_the_barrier(cfg, out, run_key):
    (barrier / name).write_text(str(out.tmp))
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < 2:
        assert time.monotonic() < deadline, "the other process never entered the stage"
        time.sleep(0.01)
    return real(cfg, out, run_key)


collect._collect = at_the_barrier
m = collect.run(build(CollectConfig, data, "collect"), RunContext(run_id))
print("MANIFEST " + json.dumps(m.to_dict()))
"""


def slow(req, route, site):
    site._record(req, 200)
    time.sleep(0.05)  # the crawl takes long enough for the other attempt to be in the middle of it
    send(req, 200, route.body, route.content_type)


@pytest.fixture
def site():
    with Site() as s:
        for i in range(12):
            s.add(f"/p{i}.html", page(f"Page {i}", *prose(f"topic {i}"), links=[f"/p{(i + 1) % 12}.html"]),
                  handler=slow)
        yield s


def collect_config(tmp_path: Path, site: Site) -> dict:
    corpus = write_lines(tmp_path / "corpus.txt", [f"line {i} of the local corpus" for i in range(3000)])
    return {"files": [{"path": str(corpus)}],
            "crawl": {"seeds": [site.url + "/p0.html"], "max_depth": 20, "concurrency": 2, "sitemaps": False,
                      "allow_networks": ["127.0.0.1"], "state_path": str(tmp_path / "crawl.sqlite")}}


def run_two(tmp_path: Path, home: Path, run_ids: tuple[str, str], data: dict) -> list[Manifest]:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**subprocess_env(home), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(barrier), f"p{i}", run_id, json.dumps(data)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, run_id in enumerate(run_ids)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [Manifest.from_dict(json.loads(next(line for line in out.splitlines() if line.startswith("MANIFEST "))[9:]))
            for out, _ in outs]


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name != "collect" and not p.name.startswith("."))


def test_two_attempts_of_one_run_at_once_give_one_whole_output(tmp_path, site):
    home = tmp_path / "home"
    first, second = run_two(tmp_path, home, ("same_run", "same_run"), collect_config(tmp_path, site))
    final = RunContext("same_run", home=home).stage_dir("collect")
    on_disk = Manifest.read(final)
    # Both attempts return the output that stands, and it is whole: every file line, every page once.
    assert first.hashes == second.hashes == on_disk.hashes
    records = list(read_jsonl(final / "records.jsonl"))
    assert Counter(r["source"] for r in records) == {"file": 3000, "web": 12}
    assert len({r["url"] for r in records}) == len(records)
    assert all(len(site.hits(f"/p{i}.html")) == 1 for i in range(12))  # the second reused the crawl
    assert leftovers(final.parent) == []  # no temp or old folder of either attempt


def test_two_runs_at_once_on_one_home(tmp_path, site):
    home = tmp_path / "home"
    data = collect_config(tmp_path, site)
    data["crawl"]["incremental"] = False  # each run fetches and emits every page (not only what changed)
    a, b = run_two(tmp_path, home, ("run_a", "run_b"), data)
    for run_id, m in (("run_a", a), ("run_b", b)):
        final = RunContext(run_id, home=home).stage_dir("collect")
        assert Manifest.read(final).hashes == m.hashes
        assert m.counts["records"] == 3012 and m.counts["crawl_docs"] == 12, m.counts
        assert leftovers(final.parent) == []
    assert a.info["crawl"]["crawl_id"] != b.info["crawl"]["crawl_id"]  # two crawls in one shared store


def test_leftovers_of_dead_attempts_are_removed_and_live_ones_kept(ctx):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        final = ctx.stage_dir("curate")
        host = StageOutput(ctx, "curate").tmp.name.split("-")[1]
        dead_tmp = final.with_name(f"curate.tmp-{host}-{dead.pid}-0123abcd")
        live_tmp = final.with_name(f"curate.tmp-{host}-{live.pid}-0123abcd")
        other_host = final.with_name(f"curate.tmp-elsewhere-{dead.pid}-0123abcd")
        legacy = final.with_name("curate.tmp")
        for folder in (dead_tmp, live_tmp, other_host, legacy):
            (folder / "sub").mkdir(parents=True)
        with StageOutput(ctx, "curate") as out:
            out.output("records", "records.jsonl").write_text("x\n")
        assert not dead_tmp.exists() and not legacy.exists()
        assert live_tmp.exists() and other_host.exists()  # a live attempt, and a pid that means nothing here
        # A failed attempt of this process is left for inspection, then cleared by the next one.
        with pytest.raises(RuntimeError), StageOutput(ctx, "curate") as out:
            failed = out.tmp
            raise RuntimeError("killed")
        assert failed.exists()
        assert failed in remove_stale_attempts(final) and not failed.exists()
    finally:
        live.kill()
        live.wait()


def test_atomic_writes_of_one_file_from_many_threads(tmp_path):
    target = tmp_path / "state.json"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                write_json(target, {"writer": n, "i": i, "pad": "x" * 2000})
                write_jsonl_atomic(tmp_path / "labels.jsonl", [{"writer": n, "i": i}] * 50)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text())["i"] == 199 and len(list(read_jsonl(tmp_path / "labels.jsonl"))) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.jsonl", "state.json"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "also fine"}\n{"text": "broken\n[1, 2]\n')
    rows = read_jsonl(path)
    assert next(rows) == {"text": "fine"} and next(rows) == {"text": "also fine"}
    with pytest.raises(InputError, match=r"records\.jsonl, line 4: not valid JSON \(Unterminated string starting at column 10\)"):
        next(rows)
    path.write_text('{"text": "fine"}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"line 2: a JSON list, not an object"):
        list(read_jsonl(path))
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"line 2: not UTF-8"):
        list(read_jsonl(path))
    path.write_text('{"text": "fine"}\n{"text": "cut')
    with pytest.raises(InputError, match=r"line 2: .*cut short"):
        list(read_jsonl(path))


def test_malformed_jsonl_in_the_cli_is_one_line_and_keeps_the_output(tmp_path):
    good = tmp_path / "good.jsonl"
    write_lines(good, [json.dumps({"text": f"A perfectly normal sentence number {i} for curation."}) for i in range(5)])
    env = subprocess_env(tmp_path / "home")
    cmd = [sys.executable, "-m", "lmchain.cli", "curate", "--out", str(tmp_path / "out"),
           "--set", "curate.workers=1", "--set", "curate.language.enabled=false"]
    ok = subprocess.run(cmd + ["--in", str(good)], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    before = (tmp_path / "out" / "manifest.json").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"text": "unterminated\n' + good.read_text())
    out = subprocess.run(cmd + ["--in", str(bad)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert f"{bad}, line 6: not valid JSON" in out.stderr
    assert (tmp_path / "out" / "manifest.json").read_text() == before  # the earlier output stands, whole
    # Only the failed attempt's own temp folder is left (for inspection; the next attempt clears it).
    assert all(p.name.startswith("out.tmp-") for p in tmp_path.glob("out.*")), os.listdir(tmp_path)
