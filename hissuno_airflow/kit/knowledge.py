"""Knowledge search for handlers that answer questions (a bot grounding its reply in the project's knowledge).

The runtime provides it behind ``WebhookCtx.search_knowledge`` (pgvector search over knowledge chunks of
the connection's project); a plugin unit-tested with its own services offers ``search_knowledge`` there,
or gets no hits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class KnowledgeHit:
    """One knowledge chunk near a query."""

    text: str
    """The chunk's text."""
    score: float
    """Cosine similarity to the query (1 is identical)."""
    source_id: str
    """Hissuno id of the knowledge source the chunk belongs to."""
    source_name: str | None = None
    """Name of that source."""
    url: str | None = None
    """The source's URL, when it has one."""
    heading: str | None = None
    """Section heading of the chunk."""


class KnowledgeSearch(Protocol):
    """What a context's services offer when knowledge search is available."""

    def search_knowledge(self, query: str, limit: int = 5) -> list[KnowledgeHit]: ...


def search_knowledge(services: Any, query: str, limit: int = 5) -> list[KnowledgeHit]:
    """``services.search_knowledge(query, limit)`` when the services offer it, else no hits."""
    fn = getattr(services, "search_knowledge", None)
    if not callable(fn) or not query.strip():
        return []
    return list(fn(query, limit))


__all__ = ["KnowledgeHit", "KnowledgeSearch", "search_knowledge"]
