"""The nightly schedule of ``lmchain_pipeline``: its cron, and the data window each scheduled run
collects.

A scheduled run at cron time T collects what arrived in [T - period, T), where the period is the
longest gap between two consecutive fires of the cron. For a regular cron ("0 2 * * *": a day,
"0 * * * *": an hour) consecutive windows tile time exactly, so each night processes only its new
data. For an irregular one ("0 2 * * 1-5") the longest gap is used, so no data falls between two
windows; where windows overlap, the texts read twice are dropped by curate's deduplication
against earlier runs.

Imported by the DAG at parse time: keep it light.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from lmchain.errors import ConfigError

SCHEDULE_ENV = "LMCHAIN_PIPELINE_SCHEDULE"
DEFAULT_CRON = "0 2 * * *"
# Gaps are measured over this many fires from a fixed Friday, so a weekday-only cron shows its
# weekend gap and every parse of the DAG computes the same period.
_FIRES = 1000
_REFERENCE = datetime(2025, 1, 3, tzinfo=timezone.utc)


def nightly_cron() -> str:
    return os.environ.get(SCHEDULE_ENV, "").strip() or DEFAULT_CRON


def cron_period(expression: str) -> timedelta:
    """The longest gap between consecutive fires of ``expression`` (UTC)."""
    from croniter import croniter

    try:
        fires = croniter(expression, _REFERENCE)
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"{SCHEDULE_ENV}={expression!r} is not a cron expression ({exc}); "
            f"e.g. '{DEFAULT_CRON}' is 02:00 UTC every day"
        ) from exc
    previous = fires.get_next(datetime)
    longest = timedelta(0)
    for _ in range(_FIRES):
        current = fires.get_next(datetime)
        longest = max(longest, current - previous)
        previous = current
    return longest


def nightly_timetable(expression: str | None = None):
    """Runs at each fire of the cron with the window [fire - period, fire) as its data interval.

    ``run_immediately=timedelta(0)``: unpausing the DAG (or deploying it) never starts a run for
    a fire time that has already passed; the first scheduled run is the next fire. Airflow's
    default would start one at once when the last fire was less than a tenth of the period ago.
    """
    from airflow.timetables.trigger import CronTriggerTimetable

    expression = expression or nightly_cron()
    return CronTriggerTimetable(
        expression, timezone="UTC", interval=cron_period(expression), run_immediately=timedelta(0)
    )
