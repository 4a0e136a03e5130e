"""Waking a stream's inbox consumer: a queued run of the host (a DAG run under Airflow), or a drain
thread in this process (``hissuno serve``)."""

from __future__ import annotations

import logging
import os
import threading

from ...kit.redaction import redact_text
from ...store.db import Store
from ..host import current_host
from .inbox import process_inbox

log = logging.getLogger(__name__)


class Dispatcher:
    """Wakes the consumer of stream inboxes that received events."""

    def dispatch(self, targets: list[tuple[str, str]]) -> None:  # pragma: no cover - interface
        """Make sure each (connection, stream) inbox gets drained soon."""
        raise NotImplementedError


class NullDispatcher(Dispatcher):
    """Leaves events pending (tests; or an operator draining on a schedule)."""

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        """Do nothing."""


class InProcessDispatcher(Dispatcher):
    """One drain thread per stream; events arriving during a drain make it run once more (coalescing)."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], bool] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._threads: list[threading.Thread] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        """Start (or re-arm) the drain thread of each target."""
        for key in targets:
            with self._lock:
                if self._running.get(key):
                    self._dirty.add(key)
                    continue
                self._running[key] = True
            t = threading.Thread(target=self._drain, args=(key,), name=f"hissuno-inbox-{key[0]}", daemon=True)
            self._threads.append(t)
            t.start()

    def _drain(self, key: tuple[str, str]) -> None:
        try:
            while True:
                with self._lock:
                    self._dirty.discard(key)
                try:
                    process_inbox(key[0], key[1], store=self.store)
                except Exception:
                    log.exception("draining webhook inbox %s/%s failed", *key)
                with self._lock:
                    if key not in self._dirty:
                        self._running[key] = False
                        return
        finally:
            with self._lock:
                if self._running.get(key) and key not in self._dirty:
                    self._running[key] = False

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Join every drain thread (tests)."""
        for t in list(self._threads):
            t.join(timeout)


class HostDispatcher(Dispatcher):
    """Queues a run of the stream through the installed host (a DAG run under Airflow), unless one is
    already queued: one queued run drains every pending event."""

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        """Queue in a background thread so the provider gets its answer at once."""
        threading.Thread(target=self._trigger_all, args=(list(targets),), daemon=True,
                         name="hissuno-trigger").start()

    def _trigger_all(self, targets: list[tuple[str, str]]) -> None:
        for cid, sid in targets:
            try:
                wake_stream(cid, sid)
            except Exception as exc:
                log.warning("could not queue a run of %s/%s: %s: %s", cid, sid, type(exc).__name__,
                            redact_text(str(exc)))


def wake_stream(connection_id: str, stream_id: str) -> str | None:
    """Queue one run of the stream with ``conf.triggered_by = webhook``; None when one is queued."""
    return current_host().wake_stream(connection_id, stream_id, conf={"triggered_by": "webhook"},
                                      user="hissuno-webhook", coalesce=True).run_id


_default: Dispatcher | None = None


def default_dispatcher() -> Dispatcher:
    """``HISSUNO_WEBHOOK_DISPATCH`` (``host``: a queued run of the host, ``inprocess``, ``none``); unset:
    the host's queue when the installed host has one, else in-process drain threads."""
    global _default
    if _default is None:
        mode = os.environ.get("HISSUNO_WEBHOOK_DISPATCH") or ("host" if current_host().queues_runs else "inprocess")
        # "airflow" is the older name of "host".
        factories = {"host": HostDispatcher, "airflow": HostDispatcher, "none": NullDispatcher}
        _default = factories.get(mode, InProcessDispatcher)()
    return _default


def set_default_dispatcher(dispatcher: Dispatcher | None) -> None:
    """Replace the process-wide dispatcher (the web app does this at start-up)."""
    global _default
    _default = dispatcher
