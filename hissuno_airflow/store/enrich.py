"""Embedding and graph evaluation of ingested entities, run in-process after the writes.

Vectors are recomputed only when the embedded text's hash (or the model) changed; each vector
records its model. Graph edges: semantic similarity through pgvector (top 5 of 10 nearest of other
entity types above ``HISSUNO_GRAPH_THRESHOLD``, default 0.6 as in the original), session<->contact
from metadata emails, contact<->company by email domain (done at upsert time in ``ingest.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pgvector import Vector

from ..kit.errors import InputError
from .db import Store
from .embedder import Embedder, get_embedder, text_hash

MAX_SEARCH_LIMIT = 100
GRAPH_TYPES = ("session", "issue", "knowledge_source", "contact", "company")
# Per embedded entity type: the condition under which an embedding belongs to a deleted entity
# (a knowledge chunk is deleted with its source). Search leaves those out; the graph keeps their edges.
_DELETED = {
    "session": "EXISTS (SELECT 1 FROM sessions t WHERE t.id = e.entity_id AND t.deleted_at IS NOT NULL)",
    "issue": "EXISTS (SELECT 1 FROM issues t WHERE t.id = e.entity_id AND t.deleted_at IS NOT NULL)",
    "contact": "EXISTS (SELECT 1 FROM contacts t WHERE t.id = e.entity_id AND t.deleted_at IS NOT NULL)",
    "company": "EXISTS (SELECT 1 FROM companies t WHERE t.id = e.entity_id AND t.deleted_at IS NOT NULL)",
    "knowledge_source": "EXISTS (SELECT 1 FROM knowledge_sources t WHERE t.id = e.entity_id"
                        " AND t.deleted_at IS NOT NULL)",
    "knowledge_chunk": "EXISTS (SELECT 1 FROM knowledge_chunks c JOIN knowledge_sources t ON t.id = c.source_id"
                       " WHERE c.id = e.entity_id AND t.deleted_at IS NOT NULL)",
}


@dataclass
class _Item:
    entity_type: str
    entity_id: str
    text: str
    graph: bool
    email: str | None


class Enricher:
    """Queue of entities to (re-)embed and link."""

    def __init__(self, store: Store, project_id: str, embedder: Embedder | None = None) -> None:
        self.store = store
        self.project_id = project_id
        self.embedder = embedder
        self._items: dict[tuple[str, str], _Item] = {}
        self.embedded = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, entity_type: str, entity_id: str, text: str, *, graph: bool = True,
              email: str | None = None) -> None:
        """Ask for ``entity`` to be embedded from ``text`` (and linked, when ``graph``)."""
        self._items[(entity_type, entity_id)] = _Item(entity_type, entity_id, text.strip() or entity_type,
                                                      graph, email)

    def rename(self, entity_type: str, old_id: str, new_id: str) -> None:
        """Re-point a queued item at another entity id (an ingest batch adopted an existing entity)."""
        item = self._items.pop((entity_type, old_id), None)
        if item is not None:
            item.entity_id = new_id
            self._items[(entity_type, new_id)] = item

    def run(self) -> int:
        """Embed what changed, then evaluate the graph; returns the number of vectors written."""
        if not self._items:
            return 0
        items = list(self._items.values())
        self._items.clear()
        embedder = self.embedder or get_embedder()
        hashes = {(i.entity_type, i.entity_id): text_hash(i.text) for i in items}
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT entity_type, entity_id::text AS id, text_hash, model FROM embeddings"
                " WHERE entity_id = ANY(%s::uuid[])",
                ([i.entity_id for i in items],),
            ).fetchall()
        current = {(r["entity_type"], r["id"]): (r["text_hash"], r["model"]) for r in rows}
        todo = [i for i in items
                if current.get((i.entity_type, i.entity_id)) != (hashes[(i.entity_type, i.entity_id)],
                                                                  embedder.model)]
        written = 0
        for start in range(0, len(todo), 100):
            batch = todo[start : start + 100]
            vectors = embedder.embed([i.text[:8000] for i in batch])
            self._write([(UUID(self.project_id), i.entity_type, UUID(i.entity_id), embedder.model,
                          hashes[(i.entity_type, i.entity_id)], Vector(v))
                         for i, v in zip(batch, vectors, strict=True)])
            written += len(batch)
        self.embedded += written
        self._link([i for i in todo if i.graph], embedder.model)
        self._link_emails([i for i in items if i.email and i.entity_type == "session"])
        return written

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        # Binary COPY into a scratch table, then one upsert: vectors are not rendered and parsed as
        # 1536-number text (what made row-by-row inserts ~4x slower).
        with self.store.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _hissuno_embeddings (project_id uuid, entity_type text,"
                " entity_id uuid, model text, text_hash text, embedding vector(1536)) ON COMMIT DELETE ROWS"
            )
            with cur.copy("COPY _hissuno_embeddings FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["uuid", "text", "uuid", "text", "text", "vector"])
                for row in rows:
                    cp.write_row(row)
            cur.execute(
                "INSERT INTO embeddings (project_id, entity_type, entity_id, model, text_hash, embedding)"
                " SELECT project_id, entity_type, entity_id, model, text_hash, embedding FROM _hissuno_embeddings"
                " ON CONFLICT (entity_type, entity_id) DO UPDATE SET model = EXCLUDED.model,"
                " text_hash = EXCLUDED.text_hash, embedding = EXCLUDED.embedding, updated_at = now()"
            )

    def _link(self, items: list[_Item], model: str) -> None:
        if not items:
            return
        threshold = float(os.environ.get("HISSUNO_GRAPH_THRESHOLD", "0.6"))
        with self.store.connection() as conn:
            conn.execute(
                """
                INSERT INTO entity_relationships
                    (project_id, source_type, source_id, target_type, target_id, strategy, similarity, metadata)
                SELECT e.project_id,
                       CASE WHEN (e.entity_type, e.entity_id::text) < (n.entity_type, n.entity_id::text)
                            THEN e.entity_type ELSE n.entity_type END,
                       CASE WHEN (e.entity_type, e.entity_id::text) < (n.entity_type, n.entity_id::text)
                            THEN e.entity_id ELSE n.entity_id END,
                       CASE WHEN (e.entity_type, e.entity_id::text) < (n.entity_type, n.entity_id::text)
                            THEN n.entity_type ELSE e.entity_type END,
                       CASE WHEN (e.entity_type, e.entity_id::text) < (n.entity_type, n.entity_id::text)
                            THEN n.entity_id ELSE e.entity_id END,
                       'semantic', n.sim, jsonb_build_object('model', e.model)
                FROM embeddings e
                CROSS JOIN LATERAL (
                    SELECT o.entity_type, o.entity_id, 1 - (o.embedding <=> e.embedding) AS sim
                    FROM embeddings o
                    WHERE o.project_id = e.project_id AND o.model = e.model
                      AND o.entity_type = ANY(%(types)s) AND o.entity_type <> e.entity_type
                    ORDER BY o.embedding <=> e.embedding
                    LIMIT 10
                ) n
                WHERE e.entity_id = ANY(%(ids)s::uuid[]) AND e.model = %(model)s AND n.sim >= %(t)s
                ON CONFLICT (project_id, source_type, source_id, target_type, target_id) DO UPDATE
                    SET similarity = EXCLUDED.similarity, updated_at = now()
                """,
                {"types": list(GRAPH_TYPES), "ids": [i.entity_id for i in items], "model": model,
                 "t": threshold},
            )

    def _link_emails(self, items: list[_Item]) -> None:
        if not items:
            return
        with self.store.connection() as conn:
            conn.execute(
                """
                WITH pairs AS (
                    SELECT s.id AS session_id, c.id AS contact_id
                    FROM unnest(%s::uuid[], %s::text[]) AS m(session_id, email)
                    JOIN sessions s ON s.id = m.session_id
                    JOIN contacts c ON c.project_id = s.project_id AND lower(c.email) = m.email
                ), upd AS (
                    UPDATE sessions s SET contact_id = p.contact_id FROM pairs p
                    WHERE s.id = p.session_id AND s.contact_id IS NULL
                )
                INSERT INTO entity_relationships (project_id, source_type, source_id, target_type, target_id,
                                                  strategy)
                SELECT %s, 'contact', p.contact_id, 'session', p.session_id, 'metadata_email' FROM pairs p
                ON CONFLICT DO NOTHING
                """,
                ([i.entity_id for i in items], [i.email for i in items], self.project_id),
            )


def search(store: Store, query: str, *, project_id: str, entity_type: str = "session", limit: int = 5,
           embedder: Embedder | None = None) -> list[tuple[str, float]]:
    """Entities of ``entity_type`` nearest to ``query`` as (id, similarity), best first; deleted entities
    (and chunks of deleted knowledge sources) are never returned."""
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise InputError(f"limit: expected 1 to {MAX_SEARCH_LIMIT}; got {limit}", field="limit")
    if entity_type not in _DELETED:
        msg = f"entity_type: expected one of {', '.join(_DELETED)}; got {entity_type!r}"
        raise InputError(msg, field="entity_type")
    emb = embedder or get_embedder()
    vec = Vector(emb.embed([query])[0])
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT e.entity_id::text AS id, 1 - (e.embedding <=> %s) AS sim FROM embeddings e"
            " WHERE e.project_id = %s AND e.entity_type = %s AND e.model = %s"
            f" AND NOT {_DELETED[entity_type]} ORDER BY e.embedding <=> %s LIMIT %s",
            (vec, project_id, entity_type, emb.model, vec, limit),
        ).fetchall()
    return [(r["id"], float(r["sim"])) for r in rows]
