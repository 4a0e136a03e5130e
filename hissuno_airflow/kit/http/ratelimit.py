"""A shared request budget: a thread-safe token bucket that blocks until a request may go out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
