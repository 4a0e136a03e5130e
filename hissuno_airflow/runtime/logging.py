"""The plugin-facing logger: prefixed, structured, and redacted before anything is written."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..kit.redaction import redact, redact_text


class PluginLogger:
    """``info/warning/error/debug(message, data)`` with ``[plugin:stream]`` prefix and secret masking."""

    def __init__(self, prefix: str, secrets: list[str] | None = None, logger: logging.Logger | None = None):
        self.prefix = prefix
        self.secrets = secrets if secrets is not None else []
        self._log = logger or logging.getLogger("hissuno.plugins")
        self._debug = bool(os.environ.get("HISSUNO_DEBUG_INTEGRATIONS"))

    def _emit(self, level: int, message: str, data: Mapping[str, Any] | None) -> None:
        text = redact_text(f"[{self.prefix}] {message}", self.secrets)
        if data:
            text += " " + str(redact(dict(data), secrets=self.secrets))
        self._log.log(level, text)

    def isEnabledFor(self, level: int) -> bool:  # the stdlib logger's name, which callers probe
        """Whether a line at ``level`` would be written (debug lines only with HISSUNO_DEBUG_INTEGRATIONS)."""
        if level <= logging.DEBUG:
            return self._debug and self._log.isEnabledFor(logging.INFO)
        return self._log.isEnabledFor(level)

    def debug(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Debug line, only when HISSUNO_DEBUG_INTEGRATIONS is set."""
        if self._debug:
            self._emit(logging.INFO, message, data)

    def info(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Info line."""
        self._emit(logging.INFO, message, data)

    def warning(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Warning line."""
        self._emit(logging.WARNING, message, data)

    warn = warning

    def error(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Error line."""
        self._emit(logging.ERROR, message, data)


# -- run log lines a person reads (the Airflow task log, the terminal) -----------------------------


def when(value: datetime | None) -> str:
    """A moment as people read it in a log: ``2026-03-01 14:05:09 UTC``."""
    if value is None:
        return "the beginning"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def window_line(label: str, *, mode: str, since: datetime | None, until: datetime | None,
                reason: str = "") -> str:
    """What a run syncs, in plain words.

    Args:
        label: what is synced, e.g. ``Tickets from Zendesk (acme.zendesk.com)``.
        mode: ``incremental``, ``full`` or ``backfill``.
        since: the window start (None: from the beginning).
        until: the window end (None: up to now).
        reason: why this window, e.g. ``from the last successful run``.
    """
    end = f"until {when(until)}" if until is not None else "up to now"
    if mode == "backfill":
        text = (f"Backfilling {label}: records changed from {when(since)} {end} "
                "(backfill: the live cursor is neither read nor moved)")
    elif mode == "full" or since is None:
        text = f"Syncing {label}: everything, {end} ({mode} sync)"
    else:
        text = f"Syncing {label}: records changed since {when(since)}, {end} (incremental sync)"
    return f"{text}; {reason}" if reason else text


def _n(value: int) -> str:
    return f"{value:,}"


def counts_text(counts: Mapping[str, int]) -> str:
    """``1,200 found, 1,150 synced, 50 skipped, 0 failed`` (plus deletions when there were any)."""
    parts = [f"{_n(counts.get(k, 0))} {k}" for k in ("found", "synced", "skipped", "failed")]
    if counts.get("deleted"):
        parts.append(f"{_n(counts['deleted'])} deleted")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 2 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def progress_line(counts: Mapping[str, int], elapsed: float, *, current: int | None = None,
                  total: int | None = None) -> str:
    """A progress line: counts, the rate so far and, when the provider said, how far along."""
    done = counts.get("synced", 0) + counts.get("skipped", 0) + counts.get("failed", 0)
    rate = done / elapsed if elapsed > 0 else 0.0
    head = f"Progress: {counts_text(counts)}"
    if total:
        head += f" ({_n(current or 0)} of {_n(total)})"
    return f"{head}; {rate:,.1f} records/s, {duration(elapsed)} elapsed"


def final_line(status: str, counts: Mapping[str, int], elapsed: float, *, cursor_before: datetime | None,
               cursor_after: datetime | None, moves_cursor: bool) -> str:
    """The last line of a run: its outcome, counts, duration and what became of the cursor."""
    outcome = {"success": "Finished", "error": "Failed", "cancelled": "Cancelled"}.get(status, status)
    text = f"{outcome} in {duration(elapsed)}: {counts_text(counts)}."
    if status != "success":
        return f"{text} The cursor did not move."
    if not moves_cursor:
        return f"{text} The live cursor was left as it was."
    if cursor_after is None or cursor_after == cursor_before:
        return f"{text} The cursor stays at {when(cursor_before)} (nothing newer)."
    return f"{text} New cursor: {when(cursor_after)} (the next run syncs changes after it)."
