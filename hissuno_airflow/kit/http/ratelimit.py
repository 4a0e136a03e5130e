"""Request budgets: a thread-safe token bucket that blocks until a request may go out, and the same
budget shared by every process through a ledger the runtime supplies (``SlotLedger``; the kit never
reaches the store itself)."""

from __future__ import annotations

import logging
import threading
import time
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
    """

    def reserve(self, scope: BudgetScope, per_minute: float, burst: float) -> float: ...


class SharedRateBudget:
    """A ``RateBudget`` whose bucket lives in a ``SlotLedger``, so every process calling one provider
    account paces against the same limit (two streams in two task processes, a CLI sync beside a
    scheduled one).

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
    ) -> None:
        self._local = RateBudget(per_minute, burst=burst, sleep=sleep)  # validates, and the fallback
        self.per_minute = self._local.per_minute
        self.capacity = self._local.capacity
        self.scope = scope
        self._ledger = ledger
        self._sleep = sleep
        self._degraded = False

    def __repr__(self) -> str:
        return (f"SharedRateBudget({self.scope.plugin_id}/{self.scope.name}, per_minute={self.per_minute:g},"
                f" burst={self.capacity:g})")

    def acquire(self) -> float:
        """Book the next slot in the ledger and sleep until it; returns the seconds waited."""
        try:
            wait = float(self._ledger.reserve(self.scope, self.per_minute, self.capacity))
        except Exception as exc:  # the ledger is the store: any driver error means "not reachable now"
            if not self._degraded:
                self._degraded = True
                _log.warning("shared rate budget %s/%s unavailable (%s); pacing in this process until it is back",
                             self.scope.plugin_id, self.scope.name, type(exc).__name__)
            return self._local.acquire()
        if self._degraded:
            self._degraded = False
            _log.info("shared rate budget %s/%s is back", self.scope.plugin_id, self.scope.name)
        if wait > 0:
            self._sleep(wait)
        return wait


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
