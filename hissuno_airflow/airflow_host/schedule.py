"""When a stream's DAG runs: its cron slot, the same schedule in words, and the next run Airflow will make.

Slots are spread: each DAG gets a stable minute (and, for 6h/24h streams, hour) derived from its id, so
the streams of one account do not all call the provider at the same minute. The DAG uses a
``CronDataIntervalTimetable`` over that slot with ``catchup=False``.

First run: Airflow (``catchup=False``) starts a new DAG at the latest *completed* interval that begins
at or after ``start_date``. With ``start_date`` at the stream's creation, a 24h stream enabled just
after its slot waited for the next slot plus a whole interval (33 hours in one report). The DAG's
``start_date`` is therefore two intervals before the stream was created: the interval that completed
last is then always eligible, so the scheduler runs it as soon as the DAG appears, and later runs keep
to the spread slot.

``next_run_after`` says when Airflow will next create a run, so the stored ``next_sync_at`` that the
Integrations page shows agrees with Airflow. Pure arithmetic over the same slot: no Airflow import.
"""

from __future__ import annotations

import functools
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from .schedule_words import describe_cron

__all__ = ["FIRST_RUN_DELAY", "FREQ_HOURS", "cron_for", "describe", "describe_cron", "first_run_at",
           "next_run_after", "offset", "slot", "start_date_for", "timetable_for"]

FREQ_HOURS = {"1h": 1, "6h": 6, "24h": 24}
FIRST_RUN_DELAY = timedelta(seconds=30)
"""How soon after enabling the first run is expected: the DAG processor's default re-parse interval."""


def offset(dag_id: str) -> int:
    """The DAG's stable spread offset (crc32, not ``hash()``, which changes per process)."""
    return zlib.crc32(dag_id.encode())


def slot(frequency: str, dag_id: str) -> tuple[int, int, int] | None:
    """``(hours between runs, first hour of the day, minute)`` of a scheduled frequency; None otherwise."""
    hours = FREQ_HOURS.get(frequency)
    if hours is None:
        return None
    off = offset(dag_id)
    return hours, (off // 60) % hours, off % 60


def cron_for(frequency: str, dag_id: str) -> str | None:
    """The cron expression of the DAG's slot (None for manual and webhook streams)."""
    s = slot(frequency, dag_id)
    if s is None:
        return None
    hours, hour, minute = s
    if hours == 1:
        return f"{minute} * * * *"
    if hours == 24:
        return f"{minute} {hour} * * *"
    return f"{minute} {hour}-23/{hours} * * *"


def describe(frequency: str, dag_id: str) -> str:
    """The schedule in words, e.g. ``every 6 hours, at 04:30, 10:30, 16:30 and 22:30 UTC``."""
    s = slot(frequency, dag_id)
    if s is None:
        return "on webhook events only" if frequency == "webhook" else "only when triggered (manual)"
    hours, hour, minute = s
    if hours == 1:
        return f"every hour, at {minute:02d} minutes past the hour (UTC)"
    times = [f"{h:02d}:{minute:02d}" for h in range(hour, 24, hours)]
    if hours == 24:
        return f"every day, at {times[0]} UTC"
    return f"every {hours} hours, at {', '.join(times[:-1])} and {times[-1]} UTC"


def timetable_for(frequency: str, dag_id: str) -> Any:
    """``None`` for manual/webhook; a cron data-interval timetable over the DAG's slot otherwise.

    That is ``StreamTimetable`` (the schedule in words in Airflow's UI) when the Hissuno plugin is loaded
    in this process, else the SDK's ``CronDataIntervalTimetable``; both schedule identically.
    """
    cron = cron_for(frequency, dag_id)
    if cron is None:
        return None
    from .timetable import registered, stream_timetable

    return stream_timetable(cron) if registered() else _cron_timetable(cron)


@functools.lru_cache(maxsize=2048)
def _cron_timetable(cron: str) -> Any:
    # At most 60 * (1 + 6 + 24) distinct expressions: sharing the (immutable) timetable saves
    # parsing the same cron expression again for every DAG of a large file.
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(cron, timezone="UTC")


def start_date_for(frequency: str, created_at: datetime, *, catchup: bool = False) -> datetime:
    """The DAG's ``start_date``: two intervals before the stream was created, so its first run is immediate.

    With catchup (``HISSUNO_DAG_CATCHUP``) it is the creation itself: the scheduler then runs every interval
    from when the stream was enabled, never earlier.
    """
    hours = FREQ_HOURS.get(frequency)
    return created_at if hours is None or catchup else created_at - timedelta(hours=2 * hours)


def next_run_after(frequency: str, dag_id: str, now: datetime) -> datetime | None:
    """The first slot strictly after ``now``: when Airflow creates the DAG's next scheduled run.

    A run covers the interval that ends at its slot and is created at that slot, so after a run (or at
    any moment between slots) the next run comes at the next slot. None for manual/webhook streams.
    """
    s = slot(frequency, dag_id)
    if s is None:
        return None
    hours, hour, minute = s
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for d in (day, day + timedelta(days=1)):
        for h in range(hour, 24, hours):
            at = d.replace(hour=h, minute=minute)
            if at > now:
                return at
    raise AssertionError("a slot exists within a day")  # every frequency has a slot each day


def first_run_at(frequency: str, now: datetime) -> datetime | None:
    """When a newly enabled stream's first run is expected: right after its DAG appears."""
    return None if frequency not in FREQ_HOURS else now + FIRST_RUN_DELAY
