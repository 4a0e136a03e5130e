"""The store side of shared request budgets: a ``SlotLedger`` (``kit.http.ratelimit``) on ``rate_budgets``.

Each budget is a GCRA token bucket in one row: ``tat`` is when the bucket would next be empty-and-refilled
(its "theoretical arrival time"). Booking a slot is one upsert, atomic under the row lock, so every
process of every host calling one provider account draws from the same bucket: with an interval
``T = 60 / per_minute`` and a tolerance ``tau = (burst - 1) * T``, the request may go at
``max(now, tat - tau)`` and ``tat`` moves to ``max(tat, now) + T``. Any window of ``w`` seconds then holds
at most ``burst + w / T`` booked slots. The database's clock decides, so hosts need not agree on time.
"""

from __future__ import annotations

from ..kit.http.ratelimit import BudgetScope
from .db import Store

# One round trip in autocommit (no BEGIN/COMMIT) books ``count`` slots: the bucket moves ``count``
# intervals; RETURNING gives how far ahead of now it ends (``lead``), and slot i (from 0) may go
# ``lead - (count - i) * T - tau`` from now, as ``count`` single bookings at this instant would have said.
_RESERVE = (
    "INSERT INTO rate_budgets AS b (plugin_id, account, name, tat)"
    " VALUES (%(p)s, %(a)s, %(n)s, now() + make_interval(secs => %(span)s))"
    " ON CONFLICT (plugin_id, account, name) DO UPDATE"
    " SET tat = greatest(b.tat, now()) + make_interval(secs => %(span)s)"
    " RETURNING extract(epoch FROM b.tat - now())::float8 AS lead"
)


class StoreLedger:
    """Books request slots in ``rate_budgets`` (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return "StoreLedger()"

    def reserve(self, scope: BudgetScope, per_minute: float, burst: float) -> float:
        """Book the next slot of ``scope``; returns the seconds to wait before sending."""
        return self.reserve_many(scope, per_minute, burst, 1)[0]

    def reserve_many(self, scope: BudgetScope, per_minute: float, burst: float, count: int) -> list[float]:
        """Book the next ``count`` slots of ``scope`` in one round trip; each one's seconds to wait from now."""
        interval = 60.0 / per_minute
        tolerance = max(0.0, burst - 1) * interval
        with self.store.autocommit() as conn:
            row = conn.execute(_RESERVE, {"p": scope.plugin_id, "a": scope.account, "n": scope.name,
                                               "span": interval * count}).fetchone()
        lead = float(row["lead"]) if row else 0.0
        return [max(0.0, lead - (count - i) * interval - tolerance) for i in range(count)]
