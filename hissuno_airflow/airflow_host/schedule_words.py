"""A stream's cron slot in words: shared by the schedule module and ``StreamTimetable`` (no imports)."""

from __future__ import annotations


def describe_cron(expression: str) -> str:
    """A slot's cron expression (as ``cron_for`` writes it) in words; any other expression as it is."""
    parts = expression.split()
    try:
        minute = int(parts[0])
        if parts[1:] == ["*", "*", "*", "*"]:
            return f"every hour, at {minute:02d} minutes past the hour (UTC)"
        if parts[2:] != ["*", "*", "*"]:
            return expression
        if parts[1].isdigit():
            return f"every day, at {int(parts[1]):02d}:{minute:02d} UTC"
        first, step = parts[1].split("-23/")
        times = [f"{h:02d}:{minute:02d}" for h in range(int(first), 24, int(step))]
    except (ValueError, IndexError):
        return expression
    return f"every {step} hours, at {', '.join(times[:-1])} and {times[-1]} UTC" if len(times) > 1 else expression
