"""Versioned, idempotent schema migrations (``hissuno db migrate``).

Each ``migrations/NNNN_name.sql`` runs once, in its own transaction, under an advisory lock so
concurrent processes (scheduler, API server, CLI) never apply the same file twice. A data migration
that needs Python (encryption with the app's key) is a ``DATA_MIGRATIONS`` entry, numbered and recorded
like a file.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import psycopg

_LOCK_KEY = 0x4855_4953_534E_4F  # "HISSUNO": one advisory lock id for migrations


def _seal_secret_settings(conn: psycopg.Connection[Any]) -> None:
    from .sealed import seal_plaintext_settings

    seal_plaintext_settings(conn)


DATA_MIGRATIONS: dict[str, Callable[[psycopg.Connection[Any]], None]] = {
    # Webhook secrets (and other secret settings) were stored in plaintext before 0008.
    "0008_seal_secret_settings": _seal_secret_settings,
}


def available() -> list[tuple[str, str | Callable[[psycopg.Connection[Any]], None]]]:
    """(version, sql or data step) of every shipped migration, in order."""
    folder = resources.files("hissuno_airflow.store") / "migrations"
    files = [(p.name.removesuffix(".sql"), p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql")]
    steps: list[tuple[str, str | Callable[[psycopg.Connection[Any]], None]]] = [*files, *DATA_MIGRATIONS.items()]
    return sorted(steps, key=lambda v: v[0])


def migrate(url: str) -> list[str]:
    """Apply every pending migration to the database at ``url``; returns the versions applied."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, sql in available():
                if version in done:
                    continue
                with conn.transaction():
                    if callable(sql):
                        sql(conn)
                    else:
                        conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def current_version(url: str) -> str | None:
    """The newest applied migration, or None on an empty database."""
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return row[0] if row else None
