import json

import pytest

from lmchain.artifacts import Manifest, StageOutput, safe_run_id


def test_stage_output_is_published_whole_with_manifest(ctx):
    with StageOutput(ctx, "curate", {"k": 1}) as out:
        out.output("records", "records.jsonl").write_text("x\n")
        out.manifest.counts = {"records": 1}
        assert not ctx.stage_dir("curate").exists()  # nothing visible before the end
    final = ctx.stage_dir("curate")
    m = Manifest.read(final)
    assert m.outputs["records"] == str(final / "records.jsonl")
    assert (final / "records.jsonl").read_text() == "x\n"
    assert m.counts == {"records": 1} and m.config == {"k": 1} and m.finished_at
    assert not final.with_name("curate.tmp").exists()


def test_failed_stage_leaves_no_final_folder_and_keeps_previous(ctx):
    with StageOutput(ctx, "curate") as out:
        out.output("records", "records.jsonl").write_text("old\n")
    with pytest.raises(RuntimeError):
        with StageOutput(ctx, "curate") as out:
            out.output("records", "records.jsonl").write_text("half")
            raise RuntimeError("killed")
    assert (ctx.stage_dir("curate") / "records.jsonl").read_text() == "old\n"


def test_rerun_replaces_output_without_leftovers(ctx):
    with StageOutput(ctx, "collect") as out:
        out.output("a", "a.txt").write_text("1")
    with StageOutput(ctx, "collect") as out:
        out.output("b", "b.txt").write_text("2")
    names = sorted(p.name for p in ctx.stage_dir("collect").iterdir())
    assert names == ["b.txt", "manifest.json"]
    assert json.loads((ctx.stage_dir("collect") / "manifest.json").read_text())["outputs"].keys() == {"b"}


def test_safe_run_id():
    assert safe_run_id("manual__2026-11-29T20:46:50.588787+00:00") == "manual__2026-11-29T20_46_50.588787_00_00"
