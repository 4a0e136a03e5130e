"""Set-up marks (``setup_marks``): a small JSON record per one-time set-up step, kept in the store so
that wiping the store forgets them too."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from .db import Store


def get_mark(store: Store, name: str) -> dict[str, Any] | None:
    """The mark named ``name``, or None when that step never ran on this store."""
    with store.connection() as conn:
        row = conn.execute("SELECT data FROM setup_marks WHERE name = %s", (name,)).fetchone()
    return dict(row["data"]) if row is not None else None


def put_mark(store: Store, name: str, data: dict[str, Any]) -> None:
    """Create or replace the mark named ``name``."""
    with store.connection() as conn:
        conn.execute(
            "INSERT INTO setup_marks (name, data) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data, updated_at = now()",
            (name, Jsonb(data)),
        )
