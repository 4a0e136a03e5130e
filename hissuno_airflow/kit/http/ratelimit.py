"""Request budgets: a thread-safe token bucket that blocks until a request may go out, and the same
budget shared by every process through a ledger the runtime supplies (``SlotLedger``; the kit never
reaches the store itself)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .client import RateLimiter

_log = logging.getLogger("hissuno.http.ratelimit")


class RateBudget:
    """Allow ``per_minute`` requests per minute, with bursts up to ``burst`` (default: one minute's worth).

    One instance may be shared by every client of a provider account, across threads, so that
    concurrent streams stay inside the provider's published limit instead of discovering it by 429s.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        """Create a full bucket.

        Args:
            per_minute: Sustained requests per minute; must be positive.
            burst: Bucket size; defaults to ``per_minute``.
            clock: Monotonic clock in seconds (injectable for tests).
            sleep: Sleeper (injectable for tests).

        Raises:
            ValueError: ``per_minute`` or ``burst`` is not positive.
        """
        if per_minute <= 0:
            msg = f"per_minute: expected > 0; got {per_minute!r}"
            raise ValueError(msg)
        capacity = per_minute if burst is None else burst
        if capacity <= 0:
            msg = f"burst: expected > 0; got {burst!r}"
            raise ValueError(msg)
        self.per_minute = float(per_minute)
        self.capacity = float(capacity)
        self._rate = self.per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateBudget(per_minute={self.per_minute:g}, burst={self.capacity:g})"

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def try_acquire(self) -> bool:
        """Take one token if one is available now; never blocks."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                # At least a millisecond: a float residue (tokens 0.9999999...) would ask for a wait too
                # small to move a large clock value (epoch seconds), and the loop would never end.
                wait = max((1 - self._tokens) / self._rate, 0.001)
            # Sleep outside the lock so other threads can still refill and compete fairly.
            self._sleep(wait)
            waited += wait


@dataclass(frozen=True)
class BudgetScope:
    """Who shares one budget: every client of ``account`` at ``plugin_id`` that spends budget ``name``.

    ``name`` separates budgets of one account that a provider counts apart (Zendesk's incremental
    export allows 10 a minute on top of the account's general limit).
    """

    plugin_id: str
    account: str
    name: str = "requests"


@dataclass(frozen=True)
class NamedBudget:
    """A plugin's request for a budget of its own beside the account's (``ctx.http_client(budget=...)``):
    every request of that client waits for a slot in both."""

    name: str
    per_minute: float
    burst: float | None = None


class SlotLedger(Protocol):
    """Where budgets shared across processes keep their state; the runtime supplies one backed by the store.

    ``reserve`` books the next request slot of ``scope`` for a budget of ``per_minute`` with bursts of
    ``burst``, atomically against every other process, and returns how many seconds the caller must
    wait before sending (0: now). A booked slot is spent whether or not the request is sent.

    A ledger may also offer ``reserve_many(scope, per_minute, burst, count) -> list[float]``: ``count``
    consecutive slots in one booking, exactly as ``count`` calls of ``reserve`` at that instant would book
    them, each slot's wait from now (``SharedRateBudget`` uses it when requests come fast; see there).
    """

    def reserve(self, scope: BudgetScope, per_minute: float, burst: float) -> float: ...


HOLD_S = 0.1
"""How late after its booked time a slot booked ahead may still be used (``SharedRateBudget``)."""
MAX_BATCH = 64
"""The most slots ``SharedRateBudget`` books in one round trip."""


class SharedRateBudget:
    """A ``RateBudget`` whose bucket lives in a ``SlotLedger``, so every process calling one provider
    account paces against the same limit (two streams in two task processes, a CLI sync beside a
    scheduled one).

    Each booking is a store round trip. When this process's requests come faster than ``hold`` allows
    for one (a budget of thousands a minute against a fast provider), it books the next few slots in one
    round trip and hands them out in order: as many as its recent pace would use within ``hold`` seconds,
    and never more than fit in ``hold`` at the budget's own interval, so at a budget's pace of one request
    every 0.3 s (Zendesk's 200 a minute) it still books one slot a request. A slot is used at most ``hold``
    seconds after its booked time, or dropped (spent, as any booked slot is): every request still goes at
    or after a slot the ledger booked against every other process, and at most ``hold`` seconds after it.

    When the ledger cannot be reached the request paces on a bucket of this process instead (logged
    once per outage): a store blip should slow a sync down, not fail it.
    """

    def __init__(
        self,
        ledger: SlotLedger,
        scope: BudgetScope,
        per_minute: float,
        *,
        burst: float | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        hold: float = HOLD_S,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._local = RateBudget(per_minute, burst=burst, sleep=sleep)  # validates, and the fallback
        self.per_minute = self._local.per_minute
        self.capacity = self._local.capacity
        self.scope = scope
        self._ledger = ledger
        self._sleep = sleep
        self._clock = clock
        self._interval = 60.0 / self.per_minute
        self._hold = hold
        self._max_batch = max(1, max_batch)
        self._slots: deque[float] = deque()  # clock times of slots booked ahead, not yet used
        self._last: float | None = None  # when ``acquire`` was last called
        self._gap = math.inf  # seconds between the last two calls: this process's pace
        self._lock = threading.Lock()
        self._degraded = False
        self.bookings = 0
        """Round trips to the ledger so far (each books one slot or a batch)."""

    def __repr__(self) -> str:
        return (f"SharedRateBudget({self.scope.plugin_id}/{self.scope.name}, per_minute={self.per_minute:g},"
                f" burst={self.capacity:g})")

    def _batch(self) -> int:
        """Slots to book now: those this process's pace uses within ``hold`` at the budget's interval."""
        if not hasattr(self._ledger, "reserve_many"):
            return 1
        fit = self._hold / max(self._interval, self._gap)
        return max(1, min(self._max_batch, int(fit)))

    def acquire(self) -> float:
        """Take the next slot booked ahead, or book in the ledger; sleep until it; returns the seconds waited."""
        now = self._clock()
        with self._lock:
            if self._last is not None:
                self._gap = now - self._last
            self._last = now
            while self._slots and now - self._slots[0] > self._hold:
                self._slots.popleft()  # too late to use: the provider may already count later slots
            at = self._slots.popleft() if self._slots else None
            count = self._batch() if at is None else 0
        if at is None:
            try:
                waits = self._book(count)
            except Exception as exc:  # the ledger is the store: any driver error means "not reachable now"
                if not self._degraded:
                    self._degraded = True
                    _log.warning("shared rate budget %s/%s unavailable (%s); pacing in this process until it is"
                                 " back", self.scope.plugin_id, self.scope.name, type(exc).__name__)
                return self._local.acquire()
            if self._degraded:
                self._degraded = False
                _log.info("shared rate budget %s/%s is back", self.scope.plugin_id, self.scope.name)
            booked = self._clock()
            at = booked + waits[0]
            if len(waits) > 1:
                with self._lock:
                    self._slots.extend(booked + w for w in waits[1:])
        wait = at - self._clock()
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0

    def _book(self, count: int) -> list[float]:
        self.bookings += 1
        if count > 1:
            many = self._ledger.reserve_many  # type: ignore[attr-defined]
            return [float(w) for w in many(self.scope, self.per_minute, self.capacity, count)]
        return [float(self._ledger.reserve(self.scope, self.per_minute, self.capacity))]


class AllBudgets:
    """Several budgets one request counts against; ``acquire`` waits for each in turn.

    Give the scarcest first: a slot booked early in a plentiful budget would sit unused while the
    scarce one is waited for, and the provider would see that request late, bunched with later ones.
    """

    def __init__(self, *budgets: RateLimiter) -> None:
        self.budgets = budgets

    def __repr__(self) -> str:
        return f"AllBudgets{self.budgets!r}"

    def acquire(self) -> float:
        """Wait for a slot in every budget; returns the total seconds waited."""
        waited = 0.0
        for budget in self.budgets:
            got = budget.acquire()
            waited += got if isinstance(got, (int, float)) else 0.0
        return waited
