"""Hybrid search: PostgreSQL full-text ranking fused with pgvector similarity.

Each entity type is asked twice: its nearest vectors of the current model (through the type's partial
HNSW index) and its best full-text matches (``search_text.tsv``, GIN). The two ranked lists are fused
by reciprocal rank fusion (score = sum of ``1 / (RRF_K + rank)``), so an exact identifier ("INC-4821",
an error code) that no embedding model understands still finds its record, and a paraphrase with no
word in common finds its record through the vector. Filters: kind, connection, project, time.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from pgvector import Vector

from ..kit.errors import InputError
from .db import Store
from .embedder import Embedder, get_embedder
from .enrich import _DELETED, _SEARCH_SCAN, MAX_SEARCH_LIMIT, nearest_sql

RRF_K = 60  # the usual constant: a rank-1 hit in one list weighs about as much as rank 2 in both
OR_WEIGHT = 0.3
CANDIDATES = 40  # per list and entity type (hnsw.ef_search's default)
KINDS: dict[str, str] = {
    "session": "session", "issue": "issue", "knowledge": "knowledge_source", "contact": "contact",
    "company": "company",
}
"""Search kind -> the embedded entity type holding it."""
_KIND_OF = {v: k for k, v in KINDS.items()}
Mode = Literal["hybrid", "vector", "text"]
MODES: tuple[str, ...] = ("hybrid", "vector", "text")
_TABLE = {"session": "sessions", "issue": "issues", "knowledge_source": "knowledge_sources",
          "contact": "contacts", "company": "companies"}
_TITLE = {
    "session": "coalesce(nullif(t.name, ''), left(split_part(st.body, E'\\n', 1), 120))",
    "issue": "t.name",
    "knowledge_source": "coalesce(nullif(t.name, ''), t.url, 'knowledge')",
    "contact": "coalesce(nullif(t.name, ''), t.email)",
    "company": "coalesce(nullif(t.name, ''), t.domain)",
}
_URL = {"knowledge_source": "t.url"}
_WORD = re.compile(r"[\w][\w.\-/:]*", re.UNICODE)
_HEADLINE = "StartSel=«, StopSel=», MaxWords=28, MinWords=10, MaxFragments=1, ShortWord=2"


@dataclass(frozen=True)
class Hit:
    """One result, readable as it stands."""

    kind: str
    id: str
    title: str
    snippet: str
    score: float
    """Fused reciprocal-rank score (higher is better); in ``vector`` mode the cosine similarity."""
    similarity: float | None
    """Cosine similarity of the query and the record under the current model, when among the nearest."""
    plugin_id: str | None
    connection_id: str | None
    connection_label: str | None
    external_id: str | None
    url: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _tsquery_text(query: str) -> str:
    # Any word may match (websearch syntax "a or b"); ranking rewards records matching more of them.
    words = [w.strip(".-/:") for w in _WORD.findall(query)]
    return " or ".join(w for w in words if w)


def vector_sql(entity_type: str, dims: int, extra: str = "") -> str:
    """The nearest ``%(k)s`` vectors of ``entity_type`` to ``%(v)s`` (``dims`` long) under model ``%(m)s``
    in project ``%(p)s``."""
    assert entity_type in _KIND_OF  # a constant, inlined so the planner matches the type's partial HNSW index
    return nearest_sql(entity_type, dims, extra)


def _fuse(ranked: dict[tuple[str, str], float], scores: dict[tuple[str, str], float], weight: float) -> None:
    """Add one list's reciprocal ranks (its entries ordered by ``scores``, best first) to ``ranked``."""
    order = sorted(scores, key=lambda k: (-scores[k], k))[:CANDIDATES]
    for rank, key in enumerate(order, 1):
        ranked[key] = ranked.get(key, 0.0) + weight / (RRF_K + rank)


def _all_words(query: str) -> str:
    return " ".join(w.strip(".-/:") for w in _WORD.findall(query))


def _filters(entity_type: str, connection_id: str | None, since: datetime | None, until: datetime | None,
             alias: str) -> tuple[str, dict[str, Any]]:
    sql = f" AND NOT {_DELETED[entity_type]}"  # written for alias e
    params: dict[str, Any] = {}
    if connection_id is not None:
        sql += (" AND EXISTS (SELECT 1 FROM integration_synced_records r"
                f" WHERE r.hissuno_id = {alias}.entity_id AND r.connection_id = %(conn)s)")
        params["conn"] = connection_id
    if since is not None or until is not None:
        table = _TABLE[entity_type]
        sql += (f" AND EXISTS (SELECT 1 FROM {table} w WHERE w.id = {alias}.entity_id"
                " AND (%(since)s::timestamptz IS NULL OR w.updated_at >= %(since)s)"
                " AND (%(until)s::timestamptz IS NULL OR w.updated_at < %(until)s))")
        params["since"], params["until"] = since, until
    return sql, params


def search(store: Store, query: str, *, project_id: str, kinds: list[str] | None = None,
           connection_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
           limit: int = 10, mode: str = "hybrid", embedder: Embedder | None = None) -> list[Hit]:
    """The records best matching ``query``, best first (deleted records never)."""
    query = query.strip()
    if not query:
        raise InputError("query: expected some text to search for; got an empty query", field="query")
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise InputError(f"limit: expected 1 to {MAX_SEARCH_LIMIT}; got {limit}", field="limit")
    if mode not in MODES:
        raise InputError(f"mode: expected one of {', '.join(MODES)}; got {mode!r}", field="mode")
    kinds = kinds or ["session", "issue", "knowledge"]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise InputError(f"kind: expected some of {', '.join(KINDS)}; got {', '.join(bad)}", field="kind")
    if since is not None and until is not None and since >= until:
        raise InputError("since: expected a time before until", field="since")
    types = [KINDS[k] for k in dict.fromkeys(kinds)]
    emb = embedder or get_embedder()
    ranked: dict[tuple[str, str], float] = {}
    sims: dict[tuple[str, str], float] = {}
    every_word: set[tuple[str, str]] = set()
    depth = max(CANDIDATES, limit)
    tsq = _tsquery_text(query)
    with store.connection() as conn, conn.transaction():
        conn.execute(_SEARCH_SCAN)
        if mode in ("hybrid", "vector"):
            vec = Vector(emb.embed([query])[0])
            for t in types:
                extra, params = _filters(t, connection_id, since, until, "e")
                rows = conn.execute(vector_sql(t, emb.dims, extra),
                                    {"v": vec, "p": project_id, "m": emb.model, "k": depth, **params}).fetchall()
                sims.update({(t, r["id"]): float(r["sim"]) for r in rows})
            # One ranking across types (by similarity), not one per type: rank 1 is the nearest record.
            _fuse(ranked, sims, 1.0)
        if mode in ("hybrid", "text") and tsq:
            # Records holding every word of the query (an identifier, an exact phrase). Records holding
            # any of them only in text mode: fused with the vector list they cost paraphrase queries
            # (which share words like "account" with unrelated records) more than they gained
            # (bench/search_quality.py: hybrid paraphrase recall@5 0.62 -> 0.53 with them at weight 0.3).
            lists = [(_all_words(query), 1.0)] + ([(tsq, OR_WEIGHT)] if mode == "text" else [])
            for text_query, weight in lists:
                if not text_query:
                    continue
                # One statement for every type (the GIN index is not per type): each type's own
                # conditions (deleted, filters) OR-ed together.
                conds, params = [], {}
                for t in types:
                    extra, p = _filters(t, connection_id, since, until, "e")
                    conds.append(f"(e.entity_type = '{t}'{extra})")
                    params.update(p)
                rows = conn.execute(
                    "SELECT e.entity_type, e.entity_id::text AS id, ts_rank_cd(e.tsv, q, 1) AS rank"
                    " FROM search_text e, websearch_to_tsquery('english', %(q)s) q"
                    f" WHERE e.tsv @@ q AND e.project_id = %(p)s AND ({' OR '.join(conds)})"
                    " ORDER BY 3 DESC, e.entity_id LIMIT %(k)s",
                    {"q": text_query, "p": project_id, "k": depth, **params},
                ).fetchall()
                found = {(r["entity_type"], r["id"]): float(r["rank"]) for r in rows}
                _fuse(ranked, found, weight)
                if weight == 1.0:
                    every_word.update(found)
        if mode == "vector":
            ranked = dict(sims)
        # Equal scores (rank 1 of one list each): a record holding every word of the query beats the
        # nearest vector, which may be nearest only by being least far (a unique record among
        # near-duplicates the HNSW scan cannot reach, see enrich.py).
        best = sorted(ranked.items(), key=lambda kv: (-kv[1], kv[0] not in every_word, kv[0]))[:limit]
        details = _details(conn, [k for k, _ in best], tsq)
    return [Hit(kind=_KIND_OF[t], id=i, score=round(score, 6), similarity=sims.get((t, i)), **details[(t, i)])
            for (t, i), score in best if (t, i) in details]


def _mark_runs(snippet: str | None) -> str:
    # ts_headline marks each token of "INC-4821" apart ("«INC»«-4821»"): one mark per matching run.
    return " ".join((snippet or "").split()).replace("»«", "")


def _details(conn: Any, keys: list[tuple[str, str]], tsq: str) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for t in dict.fromkeys(t for t, _ in keys):
        ids = [i for tt, i in keys if tt == t]
        rows = conn.execute(
            f"SELECT t.id::text AS id, {_TITLE[t]} AS title, {_URL.get(t, 'NULL::text')} AS url,"
            " CASE WHEN %(q)s <> '' AND st.tsv @@ websearch_to_tsquery('english', %(q)s)"
            f" THEN ts_headline('english', st.body, websearch_to_tsquery('english', %(q)s), '{_HEADLINE}')"
            " ELSE left(regexp_replace(st.body, '\\s+', ' ', 'g'), 200) END AS snippet,"
            " src.plugin_id, src.connection_id, src.account_label, src.external_id"
            f" FROM {_TABLE[t]} t LEFT JOIN search_text st ON st.entity_type = %(t)s AND st.entity_id = t.id"
            " LEFT JOIN LATERAL (SELECT c.plugin_id, r.connection_id, c.account_label, r.external_id"
            "  FROM integration_synced_records r JOIN integration_connections c ON c.id = r.connection_id"
            "  WHERE r.hissuno_id = t.id ORDER BY r.synced_at DESC LIMIT 1) src ON true"
            " WHERE t.id = ANY(%(ids)s::uuid[])",
            {"q": tsq, "t": t, "ids": ids},
        ).fetchall()
        for r in rows:
            out[(t, r["id"])] = {
                "title": r["title"] or t, "snippet": _mark_runs(r["snippet"]), "url": r["url"],
                "plugin_id": r["plugin_id"], "connection_id": r["connection_id"],
                "connection_label": r["account_label"], "external_id": r["external_id"],
            }
    return out
