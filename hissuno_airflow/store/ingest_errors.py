"""Failed records (``ingest_errors``): listing them and recording what a replay did.

``StreamIngest`` writes the rows (one open row per record, its kept JSON redacted) and marks them
resolved when the record is ingested later; ``runtime/replay.py`` replays them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ..kit.errors import InputError, NotFoundError
from .db import Store, connection_filter

MAX_ERRORS = 1000
STATUSES = ("open", "resolved", "superseded")
_COLS = ("id::text AS id, connection_id, stream_id, run_id::text AS run_id, kind, external_id, reason, record,"
         " status, attempts, last_error, redacted, created_at, updated_at, replayed_at, resolved_at,"
         " resolved_run_id::text AS resolved_run_id")


@dataclass(frozen=True)
class FailedRecord:
    """One ``ingest_errors`` row."""

    id: str
    connection_id: str
    stream_id: str | None
    kind: str
    external_id: str | None
    reason: str
    record: Any
    status: str
    attempts: int
    last_error: str | None
    redacted: bool
    raw: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO text); the record and errors were redacted when written."""
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in self.raw.items()}


def _row(r: dict[str, Any]) -> FailedRecord:
    return FailedRecord(id=r["id"], connection_id=r["connection_id"], stream_id=r["stream_id"], kind=r["kind"],
                        external_id=r["external_id"], reason=r["reason"], record=r["record"], status=r["status"],
                        attempts=r["attempts"], last_error=r["last_error"], redacted=r["redacted"], raw=dict(r))


def list_failed(store: Store, connection_id: str, *, stream_id: str | None = None, status: str | None = "open",
                limit: int = 100) -> list[FailedRecord]:
    """The connection's failed records, newest first (``status`` None: every status)."""
    if not 1 <= limit <= MAX_ERRORS:
        raise InputError(f"limit: expected 1 to {MAX_ERRORS}; got {limit}", field="limit")
    if status is not None and status not in STATUSES:
        raise InputError(f"status: expected one of {', '.join(STATUSES)} or all; got {status!r}", field="status")
    sql, args = connection_filter(f"SELECT {_COLS} FROM ingest_errors", connection_id, stream_id=stream_id,
                                  status=status)
    with store.connection() as conn:
        rows = conn.execute(sql + " ORDER BY created_at DESC, id LIMIT %s", [*args, limit]).fetchall()
    return [_row(r) for r in rows]


def get_failed(store: Store, connection_id: str, ids: Sequence[str]) -> list[FailedRecord]:
    """The named rows of ``connection_id``, in the order given; NotFoundError names an unknown id."""
    for i in ids:
        try:
            UUID(i)
        except ValueError:
            raise NotFoundError(f"failed record {i[:60]!r}: expected an id from `hissuno errors`",
                                field="ids") from None
    with store.connection() as conn:
        rows = conn.execute(f"SELECT {_COLS} FROM ingest_errors WHERE connection_id = %s AND id = ANY(%s::uuid[])",
                            (connection_id, list(ids))).fetchall()
    found = {r["id"]: _row(r) for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFoundError(f"failed record {missing[0]!r} is not one of connection {connection_id!r}",
                            field="ids")
    return [found[i] for i in ids]


def record_replay(store: Store, outcomes: Sequence[tuple[str, str | None]]) -> None:
    """After a replay: one more attempt on each row, with its error (None when it resolved)."""
    with store.connection() as conn:
        conn.cursor().executemany(
            "UPDATE ingest_errors SET attempts = attempts + 1, replayed_at = now(), updated_at = now(),"
            " last_error = CASE WHEN status = 'resolved' THEN NULL ELSE %s END WHERE id = %s",
            [(err, i) for i, err in outcomes],
        )


def statuses(store: Store, ids: Sequence[str]) -> dict[str, tuple[str, str | None, str | None]]:
    """id -> (status, run id of its latest failure, reason) of the given rows."""
    with store.connection() as conn:
        rows = conn.execute("SELECT id::text AS id, status, run_id::text AS run_id, reason FROM ingest_errors"
                            " WHERE id = ANY(%s::uuid[])", (list(ids),)).fetchall()
    return {r["id"]: (r["status"], r["run_id"], r["reason"]) for r in rows}


def open_counts(store: Store, connection_ids: Sequence[str]) -> dict[str, int]:
    """How many open failed records each of the given connections has (absent: none), in one query."""
    if not connection_ids:
        return {}
    with store.connection() as conn:
        rows = conn.execute("SELECT connection_id, count(*) AS n FROM ingest_errors WHERE status = 'open'"
                            " AND connection_id = ANY(%s) GROUP BY connection_id", (list(connection_ids),)).fetchall()
    return {r["connection_id"]: int(r["n"]) for r in rows}
