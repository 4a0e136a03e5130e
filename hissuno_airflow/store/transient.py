"""Telling a store blip from a bad record, and riding a blip out.

A write that fails because the store went away (restart, a killed backend, a lost connection), or because
PostgreSQL rolled the transaction back to resolve a conflict (serialization failure, deadlock), says
nothing about the record: it is retried in place, and when the store does not come back in time the run
fails retriably with its cursor unmoved. Only an error the data caused (a constraint, a value too large,
bad input) becomes a per-record ``ingest_errors`` row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from .. import settings
from ..kit.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATE classes of the store, not of the data: connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources, operator intervention (admin or crash
# shutdown, cannot connect now, statement timeout), system error.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the store failing (worth a retry) rather than the record being invalid."""
    if isinstance(exc, StoreError):
        return exc.retriable
    if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return False
    state = getattr(exc, "sqlstate", None)
    # No SQLSTATE: the client lost the connection (or the pool had none to give).
    return state is None or state[:2] in _TRANSIENT_CLASSES


def unavailable(exc: BaseException, what: str) -> StoreUnavailable:
    """The retriable error a run fails with once a blip outlasted the retries (names no value)."""
    return StoreUnavailable(f"the store failed while {what} ({type(exc).__name__}); retry the run")


def retry_transient(fn: Callable[[], T], what: str, *, budget_s: float | None = None) -> T:
    """Call ``fn`` (one whole transaction) until it succeeds, retrying store blips for ``budget_s``.

    Raises StoreUnavailable when the store stays away longer; any other error propagates at once.
    """
    budget = settings.store_retry_seconds() if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    delay = 0.1
    while True:
        try:
            return fn()
        except Exception as exc:
            if isinstance(exc, StoreError) or not is_transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise unavailable(exc, what) from exc
            log.warning("store blip while %s (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
