"""Nightly runs: each scheduled interval collects only the files that arrived in it; other runs
read their sources in full."""

import os
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from lmchain.airflow_tasks import window_overrides
from lmchain.artifacts import RunContext, read_jsonl
from lmchain.stages.collect import run as collect
from lmchain.config import load_config

DAY = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


def _file(folder, name, lines, when):
    path = folder / name
    path.write_text("text\n" + "".join(f"{line}\n" for line in lines))
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def _context(run_type, start, end):
    return {"dag_run": SimpleNamespace(run_type=run_type), "data_interval_start": start, "data_interval_end": end}


def _collect_interval(folder, start, end, run_id):
    overrides = [f"collect.files=[{{path: {folder}/*.tsv, text_field: text}}]",
                 *window_overrides(_context("scheduled", start, end))]
    cfg = load_config("tiny", overrides)
    manifest = collect(cfg.collect, RunContext(run_id))
    return manifest, [r["text"] for r in read_jsonl(manifest.outputs["records"])]


def test_two_consecutive_nights_each_collect_only_their_new_data(tmp_path):
    data = tmp_path / "incoming"
    data.mkdir()
    _file(data, "monday.tsv", ["first night sentence one", "first night sentence two"], DAY + timedelta(hours=10))
    _file(data, "old.tsv", ["from last month"], DAY - timedelta(days=30))
    first, texts1 = _collect_interval(data, DAY, DAY + timedelta(days=1), "scheduled__night1")
    assert texts1 == ["first night sentence one", "first night sentence two"]
    assert first.counts["files_outside_window"] == 1

    _file(data, "tuesday.tsv", ["second night sentence"], DAY + timedelta(days=1, hours=9))
    second, texts2 = _collect_interval(data, DAY + timedelta(days=1), DAY + timedelta(days=2), "scheduled__night2")
    assert texts2 == ["second night sentence"] and second.counts["files_outside_window"] == 2

    # A rerun of the first interval, after Tuesday's file arrived, reads exactly what it read before.
    # In a later second than the first run: the records must not carry the clock (it failed CI-like
    # loaded runs when the two collects straddled a second).
    time.sleep(1.1)
    again, texts1b = _collect_interval(data, DAY, DAY + timedelta(days=1), "scheduled__night1")
    assert texts1b == texts1 and again.hashes["records"] == first.hashes["records"]


def test_only_scheduled_and_backfill_runs_are_windowed():
    start, end = DAY, DAY + timedelta(days=1)
    assert window_overrides(_context("scheduled", start, end)) == [
        'collect.modified_after="2026-11-20T02:00:00+00:00"', 'collect.modified_before="2026-11-21T02:00:00+00:00"']
    assert window_overrides(_context("backfill", start, end)) == window_overrides(_context("scheduled", start, end))
    assert window_overrides(_context("manual", start, end)) == []
    assert window_overrides(_context("asset_triggered", start, end)) == []
    assert window_overrides(_context("scheduled", end, end)) == []  # no interval: nothing to window


def test_a_scheduled_runs_window_is_the_period_since_the_previous_fire():
    from lmchain.schedule import cron_period, nightly_timetable

    assert cron_period("0 2 * * *") == timedelta(days=1)
    assert cron_period("*/15 * * * *") == timedelta(minutes=15)
    assert cron_period("0 2 * * 1-5") == timedelta(days=3)  # Monday's run covers the weekend
    assert nightly_timetable("0 * * * *").serialize()["interval"] == 3600.0


def test_unpausing_never_starts_a_run_for_a_fire_time_already_past():
    from airflow.timetables.base import TimeRestriction

    from lmchain.schedule import nightly_timetable

    now = datetime.now(timezone.utc)
    just_fired = now - timedelta(minutes=1)
    cron = f"{just_fired.minute} {just_fired.hour} * * *"  # Airflow's default would run this at once
    info = nightly_timetable(cron).next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=None, latest=None, catchup=False))
    assert info.run_after > now
    assert info.data_interval.end - info.data_interval.start == timedelta(days=1)


def test_a_bad_cron_or_bad_nightly_params_name_the_variable(monkeypatch):
    import pytest

    from lmchain import params
    from lmchain.airflow_tasks import retry_delay
    from lmchain.errors import ConfigError
    from lmchain.schedule import cron_period

    with pytest.raises(ConfigError, match="LMCHAIN_PIPELINE_SCHEDULE='every night' is not a cron expression"):
        cron_period("every night")
    monkeypatch.setenv("LMCHAIN_PIPELINE_PARAMS", '{"recipe": "tiny", "stop_after": "collect"}')
    fields = params.schema()
    assert fields["recipe"]["default"] == "tiny" and fields["stop_after"]["default"] == "collect"
    for raw, message in [('{"recipe": "nope"}', "recipe='nope' is invalid"),
                         ('{"epoch": 2}', "unknown field 'epoch'"),
                         ('{"epochs": -1}', "epochs=-1 is invalid"),
                         ("recipe=tiny", "is not JSON")]:
        monkeypatch.setenv("LMCHAIN_PIPELINE_PARAMS", raw)
        with pytest.raises(ConfigError, match=message):
            params.schema()
    monkeypatch.setenv("LMCHAIN_RETRY_DELAY_S", "soon")
    with pytest.raises(ConfigError, match="LMCHAIN_RETRY_DELAY_S='soon' must be a number of seconds"):
        retry_delay()
    monkeypatch.setenv("LMCHAIN_RETRY_DELAY_S", "5")
    assert retry_delay() == timedelta(seconds=5)
