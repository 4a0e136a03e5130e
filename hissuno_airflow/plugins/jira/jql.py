"""JQL for one project's issues, and JQL time literals that mean the instant hissuno means.

A JQL date literal (``"2024-05-01 12:34"``) has minute precision and no zone: Jira reads it in the
*calling user's* time zone. The reference wrote the UTC clock time there, so for a user in UTC+2 an
incremental run asked for issues updated since two hours after the cursor and missed them. Here an
instant is rendered in the user's zone (``/myself`` ``timeZone``) and rounded *down* to the minute for
a lower bound (``updated >= ...`` then re-reads at most a minute of issues, which ingest skips as
unchanged) and *up* for an upper bound (the run's window then drops issues updated at or after ``until``).
Around a daylight-saving fall-back a wall time names two instants; the literal is moved an hour
earlier (lower) or later (upper) until both readings are on the safe side. Without a usable zone,
the bound is widened by 14 hours, the largest UTC offset.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FMT = "%Y-%m-%d %H:%M"
_MAX_OFFSET = timedelta(hours=14)
PROJECT_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,254}")


def user_zone(name: object) -> tzinfo | None:
    """The zone Jira reads the user's date literals in, or None when ``name`` is not a known IANA zone."""
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _readings(wall: datetime, zone: tzinfo) -> list[datetime]:
    return [wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)]


def time_literal(instant: datetime, zone: tzinfo | None, *, upper: bool = False) -> str:
    """``instant`` as a JQL literal in ``zone``: never after it (lower bound) or never before it (``upper``)."""
    instant = instant.astimezone(UTC) if instant.tzinfo else instant.replace(tzinfo=UTC)
    if zone is None:
        shifted = instant + _MAX_OFFSET if upper else instant - _MAX_OFFSET
        return time_literal(shifted, UTC, upper=upper)
    wall = instant.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    if upper and wall.replace(tzinfo=zone).astimezone(UTC) < instant:
        wall += timedelta(minutes=1)
    step = timedelta(hours=1)
    for _ in range(3):  # at most one ambiguous hour per transition
        readings = _readings(wall, zone)
        if (max(readings) <= instant) if not upper else (min(readings) >= instant):
            break
        wall = wall + step if upper else wall - step
    return wall.strftime(_FMT)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def issues_jql(project_key: str, *, since: datetime | None, until: datetime | None, zone: tzinfo | None,
               user_jql: str | None = None, issue_types: tuple[str, ...] = (),
               status_categories: tuple[str, ...] = ()) -> str:
    """``project = KEY`` and the user's clauses, bounded by update time, oldest update first."""
    clauses = [f"project = {_quote(project_key)}"]
    if user_jql and user_jql.strip():
        clauses.append(f"({user_jql.strip()})")
    if issue_types:
        clauses.append(f"issuetype in ({', '.join(_quote(t) for t in issue_types)})")
    if status_categories:
        clauses.append(f"statusCategory in ({', '.join(_quote(c) for c in status_categories)})")
    if since is not None:
        clauses.append(f"updated >= {_quote(time_literal(since, zone))}")
    if until is not None:
        clauses.append(f"updated <= {_quote(time_literal(until, zone, upper=True))}")
    return " AND ".join(clauses) + " ORDER BY updated ASC, id ASC"
