"""Knowledge chunks nearest to a question (pgvector), as kit ``KnowledgeHit``s for handlers that answer."""

from __future__ import annotations

from ..kit.knowledge import KnowledgeHit
from .db import Store
from .embedder import Embedder
from .enrich import search


def search_chunks(store: Store, project_id: str, query: str, *, limit: int = 5,
                  embedder: Embedder | None = None) -> list[KnowledgeHit]:
    """The ``limit`` chunks of the project's live knowledge sources nearest to ``query``, best first."""
    found = search(store, query, project_id=project_id, entity_type="knowledge_chunk", limit=limit,
                   embedder=embedder)
    if not found:
        return []
    scores = dict(found)
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT c.id::text AS id, c.chunk_text, c.section_heading, s.id::text AS source_id, s.name, s.url"
            " FROM knowledge_chunks c JOIN knowledge_sources s ON s.id = c.source_id"
            " WHERE c.id = ANY(%s::uuid[]) AND c.project_id = %s",
            ([cid for cid, _ in found], project_id),
        ).fetchall()
    hits = [KnowledgeHit(text=r["chunk_text"], score=scores[r["id"]], source_id=r["source_id"],
                         source_name=r["name"], url=r["url"], heading=r["section_heading"]) for r in rows]
    return sorted(hits, key=lambda h: -h.score)
