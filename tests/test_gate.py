import json

import pytest

from conftest import write_records
from lmchain.config import GateConfig
from lmchain.errors import GateFailed
from lmchain.quality import data_docs_dir, run


def _inputs(path):
    return {"curate": {"outputs": {"records": str(path)}}}


def test_gate_passes_and_builds_data_docs(ctx, tmp_path):
    src = write_records(tmp_path / "c.jsonl", [{"id": str(i), "text": f"text number {i}", "source": "file"}
                                               for i in range(50)])
    m = run(GateConfig(min_rows=10), ctx, _inputs(src))
    assert m.info["passed"] is True and m.counts == {"records": 50, "expectations": 6, "failed": 0}
    assert m.outputs["records"] == str(src)  # the gate passes the corpus through
    docs = data_docs_dir(ctx.home) / "index.html"
    assert docs.is_file()


def test_gate_failure_lists_failed_expectations_and_keeps_evidence(ctx, tmp_path):
    rows = [{"id": "same", "text": "t" * 30, "source": "file"} for _ in range(5)]
    src = write_records(tmp_path / "c.jsonl", rows)
    with pytest.raises(GateFailed) as exc:
        run(GateConfig(min_rows=10, max_chars=20), ctx, _inputs(src))
    msg = str(exc.value)
    assert "failed 3 of 6" in msg
    assert "expect_table_row_count_to_be_between" in msg and "observed 5" in msg
    assert "expect_column_values_to_be_unique" in msg and "expect_column_value_lengths_to_be_between" in msg
    validation = json.loads((ctx.stage_dir("gate") / "validation.json").read_text())
    assert validation["success"] is False
    assert sum(not c["success"] for c in validation["checks"]) == 3
