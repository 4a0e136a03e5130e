"""``StreamTimetable``: a stream's cron data intervals, shown in Airflow's Schedule column in words.

Airflow shows a timetable's ``summary`` in its DAG list and DAG header; for a plain
``CronDataIntervalTimetable`` that is the cron expression ("30 4-23/6 * * *"). This subclass changes
nothing about scheduling, only the summary ("every 6 hours, at 04:30, 10:30, 16:30 and 22:30 UTC").
Airflow serializes a custom timetable only when a plugin registers it, so ``HissunoPlugin.timetables``
lists it, and the DAG factory uses it only when it is registered in the parsing process
(``registered()``); otherwise the plain timetable keeps every DAG working.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow.timetables.interval import CronDataIntervalTimetable

from .schedule_words import describe_cron


class StreamTimetable(CronDataIntervalTimetable):
    """Cron data intervals over a stream's spread slot, summarised in words."""

    @property
    def summary(self) -> str:
        """The schedule in words (Airflow's Schedule column)."""
        return describe_cron(self._expression)

    @property
    def expression(self) -> str:
        """The cron expression (as the SDK timetable exposes it)."""
        return str(self._expression)


@functools.cache
def registered() -> bool:
    """True when this process's Airflow knows ``StreamTimetable`` (the Hissuno plugin is loaded)."""
    try:
        from airflow.plugins_manager import get_timetables_plugins

        return f"{StreamTimetable.__module__}.{StreamTimetable.__qualname__}" in get_timetables_plugins()
    except Exception:
        return False


@functools.lru_cache(maxsize=2048)
def stream_timetable(cron: str) -> Any:
    """The (shared, immutable) timetable of a cron slot."""
    return StreamTimetable(cron, "UTC")
