"""Re-embedding under the current model, lazily: after ``HISSUNO_EMBEDDER`` changes, entities are
embedded again from their stored text (``search_text``) the first time search or a caller asks, only
those without a vector of the current model (hash-gated like any enrichment), with progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .db import Store
from .embedder import Embedder, get_embedder
from .enrich import GRAPH_TYPES, Enricher

_BATCH = 2000
_MISSING = (
    " FROM search_text t WHERE t.project_id = %(p)s AND NOT EXISTS (SELECT 1 FROM embeddings e"
    " WHERE e.entity_type = t.entity_type AND e.entity_id = t.entity_id AND e.model = %(m)s)"
)


@dataclass(frozen=True)
class ReembedProgress:
    """Where a re-embedding stands: ``done`` of ``total`` entities of ``model``."""

    model: str
    done: int
    total: int


def missing(store: Store, project_id: str, model: str) -> int:
    """Entities of the project with stored text but no vector of ``model``."""
    with store.connection() as conn:
        row = conn.execute(f"SELECT count(*) AS n {_MISSING}", {"p": project_id, "m": model}).fetchone()
    return int(row["n"]) if row else 0


def reembed(store: Store, project_id: str, *, embedder: Embedder | None = None,
            on_progress: Callable[[ReembedProgress], None] | None = None, budget: int | None = None) -> int:
    """Embed (and link) what has no vector of the current model yet, at most ``budget`` entities;
    returns how many were embedded. Calling it again carries on where it stopped."""
    emb = embedder or get_embedder()
    total = missing(store, project_id, emb.model)
    if budget is not None:
        total = min(total, budget)
    done = 0
    while done < total:
        with store.connection() as conn:
            rows = conn.execute(
                f"SELECT t.entity_type, t.entity_id::text AS id, t.body {_MISSING}"
                " ORDER BY t.entity_type, t.entity_id LIMIT %(n)s",
                {"p": project_id, "m": emb.model, "n": min(_BATCH, total - done)},
            ).fetchall()
        if not rows:
            break
        enricher = Enricher(store, project_id, emb)
        for r in rows:
            enricher.queue(r["entity_type"], r["id"], r["body"], graph=r["entity_type"] in GRAPH_TYPES)
        enricher.run()
        done += len(rows)
        if on_progress is not None:
            on_progress(ReembedProgress(emb.model, done, total))
    return done
