"""Projects: what every connection and ingested entity belongs to. A default project always exists
(migration 0001); ``HISSUNO_PROJECT_ID`` picks another as the default."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..kit.errors import InputError, NotFoundError
from ..kit.input_limits import check_text
from .db import Store


@dataclass(frozen=True)
class ProjectRow:
    """One project."""

    id: str
    name: str
    created_at: datetime

    def public(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "name": self.name, "created_at": self.created_at.isoformat()}


def parse_project_id(value: Any, *, field: str = "project_id") -> str:
    """The canonical form of a project id; InputError naming ``field`` unless it is a UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError):
        raise InputError(f"{field}: expected a project id (a UUID); got {str(value)[:60]!r}", field=field) from None


def get_project(store: Store, project_id: Any, *, field: str = "project_id") -> ProjectRow:
    """The project; InputError (400) for a malformed id, NotFoundError (404) for an unknown one."""
    pid = parse_project_id(project_id, field=field)
    with store.autocommit() as conn:
        row = conn.execute("SELECT id::text AS id, name, created_at FROM projects WHERE id = %s", (pid,)).fetchone()
    if row is None:
        raise NotFoundError(f"{field}: no project {pid!r} (see `hissuno projects`)", field=field)
    return ProjectRow(**row)


def list_projects(store: Store) -> list[ProjectRow]:
    """Every project, oldest first."""
    with store.autocommit() as conn:
        rows = conn.execute("SELECT id::text AS id, name, created_at FROM projects ORDER BY created_at, id").fetchall()
    return [ProjectRow(**r) for r in rows]


def create_project(store: Store, name: str) -> ProjectRow:
    """A new project named ``name`` (1-200 characters after trimming)."""
    name = check_text((name or "").strip(), "name")
    if not 1 <= len(name) <= 200:
        raise InputError("name: expected 1 to 200 characters", field="name")
    with store.connection() as conn:
        row = conn.execute("INSERT INTO projects (id, name) VALUES (%s, %s) RETURNING id::text AS id, name, created_at",
                           (str(uuid.uuid4()), name)).fetchone()
    assert row is not None
    return ProjectRow(**row)


def project_contacts(store: Store, project_id: str) -> list[dict[str, Any]]:
    """The project's live contacts (not archived, not deleted), oldest first: ``{id, email, name}``."""
    with store.autocommit() as conn:
        rows = conn.execute(
            "SELECT id::text AS id, email, name FROM contacts WHERE project_id = %s AND NOT is_archived"
            " AND deleted_at IS NULL AND email <> '' ORDER BY created_at, id", (project_id,)).fetchall()
    return [dict(r) for r in rows]
