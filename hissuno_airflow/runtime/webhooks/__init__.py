"""Webhook intake and the per-stream inbox.

Intake (``receive_webhook``) is the request path and stays small: verify the plugin's declared
signature scheme *before* any database access (the connection-scoped route only reads the
connection's own row to learn its secret), answer setup handshakes inline, parse JSON, resolve the
connection, and store the event once per enabled webhook stream in ``webhook_events`` (the unique
``(connection_id, stream_id, event_id)`` key makes a replay a no-op). Then a dispatcher wakes the
stream's consumer: under a host with a run queue (Airflow) it queues the stream's run (coalesced: one queued run drains
every pending event); under ``hissuno serve`` a per-stream worker thread drains in-process.

``process_inbox`` is the consumer: it runs the stream's ``webhook`` handler over pending events in
arrival order, and marks each one done in the same transaction as its ingest. A failing event is
marked ``failed`` with its (redacted) error and retried by later drains up to ``MAX_ATTEMPTS``.

Each enabled webhook stream of a connection gets its own row per event, so each has its own status
while the table constraint still dedupes replays.
"""

from .dispatch import (
    Dispatcher,
    HostDispatcher,
    InProcessDispatcher,
    NullDispatcher,
    default_dispatcher,
    set_default_dispatcher,
    wake_stream,
)
from .inbox import MAX_ATTEMPTS, InboxResult, list_events, process_inbox
from .intake import IntakeRequest, IntakeResult, PayloadTooLarge, ResolveCtx, max_body_bytes, receive_webhook

__all__ = [
    "MAX_ATTEMPTS", "Dispatcher", "HostDispatcher", "InProcessDispatcher", "InboxResult", "IntakeRequest",
    "IntakeResult", "NullDispatcher", "PayloadTooLarge", "ResolveCtx", "default_dispatcher", "list_events",
    "max_body_bytes", "process_inbox", "receive_webhook", "set_default_dispatcher", "wake_stream",
]
