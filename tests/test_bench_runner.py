"""bench/run_all.py: one row per bench in RESULTS.md, with the load during its run; a failed
bench is a FAILED row and a non-zero exit, and rows of benches not run are kept."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_all", REPO / "bench" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "HERE", tmp_path)
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "RESULTS.md")
    (tmp_path / "good.py").write_text("import time\ntime.sleep(6)\nprint('figures...')\nprint('RESULT good ratio=2.00')\n")
    (tmp_path / "bad.py").write_text("raise SystemExit(3)\n")
    return mod


def test_rows_carry_the_result_line_and_the_load_and_failures_fail(runner):
    assert runner.main(["good"]) == 0
    text = runner.RESULTS.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `good`"))
    assert "`RESULT good ratio=2.00`" in row and "n/a" not in row  # a load sample was taken
    assert runner.main(["bad"]) == 1
    rows = [line for line in runner.RESULTS.read_text().splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and "FAILED (exit 3, no RESULT line)" in rows[1] and rows[0] == row


def test_an_unknown_bench_is_refused(runner, capsys):
    assert runner.main(["nosuch"]) == 2
    assert "no such bench: nosuch" in capsys.readouterr().err
