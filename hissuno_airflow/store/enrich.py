"""Embedding and graph evaluation of ingested entities, run in-process after the writes.

Vectors are recomputed only when the embedded text's hash (or the model) changed; each vector
records its model. Graph edges: semantic similarity through pgvector (top 5 of 10 nearest of other
entity types above the model's measured threshold, ``HISSUNO_GRAPH_THRESHOLD`` overrides it), session<->contact
from metadata emails, contact<->company by email domain (done at upsert time in ``ingest.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from pgvector import Vector

from ..kit.errors import InputError
from .bulk import copy_rows
from .db import Store
from .embedder import Embedder, get_embedder, text_hash

MAX_SEARCH_LIMIT = 100
NEIGHBOURS = 10  # nearest vectors of other types considered per entity (edges need the threshold too)
_WRITE_BATCH = 500
_SEARCH_TEXT_MAX = 20000  # characters of an entity's text kept for full-text search and snippets
_LINK_BATCH = 2000
# An HNSW scan yields ``hnsw.ef_search`` candidates before filters; iterative scans (pgvector >= 0.8)
# go on until the project/model/deleted filters leave enough rows, in distance order. Graph linking
# takes 100 candidates (near neighbours for edges; it runs once per entity of a sync).
_ITERATIVE_SCAN = "SET LOCAL hnsw.iterative_scan = strict_order; SET LOCAL hnsw.ef_search = 100"
# What people search takes 200: a record unlike its neighbours (one Kubernetes question among hundreds
# of templated billing tickets) has few links into the graph, and a scan of 40 or 100 candidates walked
# the near-duplicates without reaching it (measured: 200 near-duplicates, the unique record found at 180
# candidates in 30 of 30 index builds, missed at 100 in 23 of 25). Among thousands of near-duplicates
# no candidate count short of all finds such a record: hybrid search (``store/search.py``) finds it
# through its words.
_SEARCH_SCAN = "SET LOCAL hnsw.iterative_scan = strict_order; SET LOCAL hnsw.ef_search = 200"
LINK_STATEMENT_TIMEOUT_S = 300
_VECTOR_COLS = ("project_id", "entity_type", "entity_id", "model", "text_hash", "embedding", "dims")
_TEXT_COLS = ("entity_type", "entity_id", "project_id", "text_hash", "body")
GRAPH_TYPES = ("session", "issue", "knowledge_source", "contact", "company")
EMBEDDED_TYPES = ("session", "contact", "company", "issue", "knowledge_source", "knowledge_chunk")
"""Each has its own partial HNSW index per vector size, ``embeddings_hnsw_<type>_<size>`` (migrations 0007
and 0012): a lookup of one type under one model scans only that type's vectors of that size."""
BULK_MIN = 1000
"""A run writing at least this many vectors of a type that holds fewer stored vectors than it writes (a
first sync) loads them without that type's HNSW index and builds the index afterwards: one build costs
about a quarter of the CPU of inserting the same vectors one by one into the graph."""
_BUILD_MEMORY = "256MB"  # an in-memory graph build of ~35,000 vectors; beyond, pgvector goes on on disk
_BUILD_TIMEOUT_S = 3600  # the build is bounded on its own (its client's liveness is checked as for any statement)
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
    text: str | None
    """None once saved to ``enrich_pending`` (see ``save_pending``): read back from there when embedded."""
    graph: bool
    email: str | None
    tokens: list[str] = field(default_factory=list)
    """``enrich_pending`` rows this item stands for (deleted once its enrichment committed)."""
    resumed: bool = False
    """Taken over from a run that did not finish: link it even when its vector is current."""
    hash: str | None = None
    """The text's hash, kept when the text itself is released."""


class Enricher:
    """Queue of entities to (re-)embed and link."""

    def __init__(self, store: Store, project_id: str, embedder: Embedder | None = None) -> None:
        self.store = store
        self.project_id = project_id
        self.embedder = embedder
        self._items: dict[tuple[str, str], _Item] = {}
        self._unsaved: dict[tuple[str, str], _Item] = {}  # queued but not yet in enrich_pending
        self.embedded = 0
        self._deferred: set[str] = set()  # types whose HNSW index this enricher dropped for a bulk load
        self._dims = 0  # the size of the vectors this enricher writes (its embedder's), set by ``run``

    def __len__(self) -> int:
        return len(self._items)

    def saved(self) -> int:
        """Queued entities whose pending rows are written (their entities' batch is committed)."""
        return len(self._items) - len(self._unsaved)

    def queue(self, entity_type: str, entity_id: str, text: str, *, graph: bool = True,
              email: str | None = None) -> None:
        """Ask for ``entity`` to be embedded from ``text`` (and linked, when ``graph``)."""
        key = (entity_type, entity_id)
        prev = self._items.get(key)
        # Queued again (new text): one item, carrying the pending rows already written for it.
        self._items[key] = self._unsaved[key] = _Item(entity_type, entity_id, text.strip() or entity_type,
                                                      graph, email, tokens=prev.tokens if prev else [])

    def save_pending(self, cur: Any, *, connection_id: str | None, stream_id: str | None,
                     run_id: str | None, release_texts: bool = False) -> None:
        """Write what was queued since the last call to ``enrich_pending`` on ``cur`` (the caller's
        transaction, the one that writes the entities).

        ``release_texts`` (the transaction commits before ``run``, on a connection of the store's own):
        the items keep only their texts' hashes, and ``run`` reads each text back from its pending row
        when it embeds it, a write batch at a time. Holding up to 20,000 queued texts (a few KB each) made
        a sync's peak memory grow with its size between enrichment passes."""
        items = list(self._unsaved.values())
        self._unsaved.clear()
        if not items:
            return
        project, run = UUID(self.project_id), run_id and UUID(run_id)
        tokens = [uuid.uuid4() for _ in items]
        for i, token in zip(items, tokens, strict=True):
            i.tokens.append(str(token))
        copy_rows(cur, "enrich_pending", ("token", "project_id", "connection_id", "stream_id", "run_id",
                                          "entity_type", "entity_id", "text", "graph", "email"),
                  ((token, project, connection_id, stream_id, run, i.entity_type, UUID(i.entity_id), i.text,
                    i.graph, i.email) for i, token in zip(items, tokens, strict=True)),
                  ("uuid", "uuid", "text", "text", "uuid", "text", "uuid", "text", "bool", "text"))
        if release_texts:
            for i in items:
                if i.text is not None:
                    i.hash, i.text = text_hash(i.text), None

    def resume(self, connection_id: str, *, stream_id: str | None = None) -> int:
        """Finish the enrichment a stopped run or drain of ``connection_id`` left pending; returns how
        many entities it enriched. Rows of a live run of another stream are left to that run; rows of
        ``stream_id`` are taken whatever their run (the caller holds that stream's lock)."""
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT p.entity_type, p.entity_id::text AS id,"
                " (array_agg(p.text ORDER BY p.queued_at DESC))[1] AS text,"
                " bool_or(p.graph) AS graph, (array_agg(p.email ORDER BY p.queued_at DESC))[1] AS email,"
                " array_agg(p.token::text) AS tokens"
                " FROM enrich_pending p WHERE p.connection_id = %s AND p.project_id = %s"
                " AND (p.run_id IS NULL OR p.stream_id IS NOT DISTINCT FROM %s OR NOT EXISTS ("
                "  SELECT 1 FROM integration_sync_runs r WHERE r.id = p.run_id AND r.status = 'in_progress'))"
                " GROUP BY p.entity_type, p.entity_id",
                (connection_id, self.project_id, stream_id),
            ).fetchall()
        for r in rows:
            key = (r["entity_type"], r["id"])
            prev = self._items.get(key)
            self._items[key] = _Item(r["entity_type"], r["id"], r["text"], r["graph"], r["email"],
                                     tokens=[*r["tokens"], *(prev.tokens if prev else [])], resumed=True)
        if rows:
            self.run()
        return len(rows)

    def rename(self, entity_type: str, old_id: str, new_id: str) -> None:
        """Re-point a queued item at another entity id (an ingest batch adopted an existing entity)."""
        item = self._items.pop((entity_type, old_id), None)
        if item is not None:
            item.entity_id = new_id
            self._items[(entity_type, new_id)] = item

    def run(self, *, keep_deferred: bool = False) -> int:
        """Embed what changed, then evaluate the graph; returns the number of vectors written.

        ``keep_deferred``: more of the same load follows (an ingest's intermediate run), so a type whose
        index this run deferred stays without it, unless this run's linking looks that type up; ``finish``
        (or a run without it) builds the rest."""
        if not self._items:
            if not keep_deferred:
                self.finish()
            return 0
        embedder = self.embedder or get_embedder()
        self._dims = embedder.dims
        self._repair_indexes()
        items = list(self._items.values())
        self._items.clear()
        self._unsaved.clear()
        hashes = {(i.entity_type, i.entity_id): i.hash or text_hash(i.text or "") for i in items}
        with self.store.connection() as conn:
            # The types too, so the lookup walks the (entity_type, entity_id, model) key instead of
            # reading every stored vector (20,000 ids a pass against a table of 100,000 and growing).
            rows = conn.execute(
                "SELECT entity_type, entity_id::text AS id, text_hash, model FROM embeddings"
                " WHERE entity_type = ANY(%s::text[]) AND entity_id = ANY(%s::uuid[]) AND model = %s",
                (sorted({i.entity_type for i in items}), [i.entity_id for i in items], embedder.model),
            ).fetchall()
        current = {(r["entity_type"], r["id"]): (r["text_hash"], r["model"]) for r in rows}
        todo = [i for i in items
                if current.get((i.entity_type, i.entity_id)) != (hashes[(i.entity_type, i.entity_id)],
                                                                  embedder.model)]
        # Equal texts give equal vectors: embed each distinct text once (sample data, templated
        # tickets and empty descriptions repeat a lot; a paid embedder is billed per text).
        # Vectors are made one write batch at a time and dropped after their last use: holding every
        # vector of a run (1536 floats each, up to 20,000 items) made a sync's peak memory grow with
        # its size (bench/sync_throughput.py: +56 MB from 1,000 to 10,000 tickets).
        key_of = [hashes[(i.entity_type, i.entity_id)] for i in todo]
        last_use = {key: n for n, key in enumerate(key_of)}
        vectors: dict[str, Vector] = {}
        self._defer_indexes(todo)
        written = 0
        # The full-text side (``search_text``: to_tsvector and its GIN index, the costlier half of a write)
        # goes on in a second session while this one writes vectors, builds indexes and links: on a first
        # sync the client has nothing else to do then, and the database's second core had been idle.
        # Both are idempotent upserts, committed before the run's pending rows are cleared (``_done``),
        # so a run stopped in between is finished by ``resume`` as before.
        texts_side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hissuno-search-text")
        pending: list[Future[None]] = []
        try:
            written = self._embed_and_write(todo, key_of, last_use, vectors, embedder, texts_side, pending)
            # A stopped run may have committed an item's vector but not its text (two sessions): a resumed
            # item whose vector is current gets its text written (a no-op where it is there already).
            todo_ids = {id(i) for i in todo}
            again = [i for i in items if i.resumed and id(i) not in todo_ids]
            body = self._texts(again)
            text_only = [(i.entity_type, UUID(i.entity_id), UUID(self.project_id),
                          hashes[(i.entity_type, i.entity_id)], body[id(i)][:_SEARCH_TEXT_MAX]) for i in again]
            for start in range(0, len(text_only), _WRITE_BATCH):
                pending.append(texts_side.submit(self._write_texts, text_only[start : start + _WRITE_BATCH]))
            self.embedded += written
            linked = [i for i in items if i.graph and (id(i) in todo_ids or i.resumed)]
            if keep_deferred:
                # Linking looks up the nearest vectors of every other graph type through their indexes.
                looked_up = {t for i in linked for t in GRAPH_TYPES if t != i.entity_type}
                self._build_indexes(self._deferred & looked_up)
            else:
                self.finish()
            self._link(linked, embedder)
            self._link_emails([i for i in items if i.email and i.entity_type == "session"])
        finally:
            texts_side.shutdown(wait=True)
        for f in pending:
            f.result()  # a failed full-text write fails the run (retriably, as any store error) before _done
        self._done([t for i in items for t in i.tokens])
        return written

    def _embed_and_write(self, todo: list[_Item], key_of: list[str], last_use: dict[str, int],
                         vectors: dict[str, Vector], embedder: Embedder, texts_side: ThreadPoolExecutor,
                         pending: list[Future[None]]) -> int:
        written = 0
        for start in range(0, len(todo), _WRITE_BATCH):
            batch = todo[start : start + _WRITE_BATCH]
            keys = key_of[start : start + _WRITE_BATCH]
            body = self._texts(batch)
            texts = {key: body[id(i)][:8000] for key, i in zip(keys, batch, strict=True) if key not in vectors}
            new = list(texts)
            for at in range(0, len(new), 100):
                chunk = new[at : at + 100]
                for key, vec in zip(chunk, embedder.embed([texts[k] for k in chunk]), strict=True):
                    vectors[key] = Vector(vec)
            self._write([(UUID(self.project_id), i.entity_type, UUID(i.entity_id), embedder.model, key,
                          vectors[key], embedder.dims) for key, i in zip(keys, batch, strict=True)])
            text_rows = [(i.entity_type, UUID(i.entity_id), UUID(self.project_id), key,
                          body[id(i)][:_SEARCH_TEXT_MAX]) for key, i in zip(keys, batch, strict=True)]
            pending.append(texts_side.submit(self._write_texts, text_rows))
            written += len(batch)
            for key in set(keys):
                if last_use[key] < start + len(batch):
                    del vectors[key]
        return written

    def _texts(self, items: Sequence[_Item]) -> dict[int, str]:
        """The text of each item (by ``id(item)``): its own, or read back from its latest pending row."""
        out = {id(i): i.text for i in items if i.text is not None}
        released = {i.tokens[-1]: i for i in items if i.text is None}
        if released:
            with self.store.connection() as conn:
                rows = conn.execute("SELECT token::text AS token, text FROM enrich_pending"
                                    " WHERE token = ANY(%s::uuid[])", (list(released),)).fetchall()
            for r in rows:
                out[id(released[r["token"]])] = r["text"]
            if len(rows) != len(released):
                # Only this run (it holds the stream's lock) clears its pending rows, after the writes.
                msg = f"enrichment: {len(released) - len(rows)} queued texts are gone from enrich_pending"
                raise RuntimeError(msg)
        return out

    def finish(self) -> None:
        """Build the HNSW indexes this enricher deferred for a bulk load."""
        self._build_indexes(set(self._deferred))

    def _defer_indexes(self, todo: Sequence[_Item]) -> None:
        """Drop the (empty or nearly empty) index of each type this run writes in bulk; built again by
        ``_build_indexes`` before any lookup needs it, and by ``_repair_indexes`` if this process dies."""
        counts: dict[str, int] = {}
        for i in todo:
            counts[i.entity_type] = counts.get(i.entity_type, 0) + 1
        for entity_type, k in counts.items():
            if k < BULK_MIN or entity_type in self._deferred or entity_type not in EMBEDDED_TYPES:
                continue
            try:
                with self.store.connection() as conn, conn.transaction():
                    # Dropping waits for readers of the table: never more than a moment (else no bulk load).
                    conn.execute("SET LOCAL lock_timeout = '1s'")
                    stored = conn.execute(
                        "SELECT count(*) AS n FROM (SELECT 1 FROM embeddings WHERE entity_type = %s AND dims = %s"
                        " LIMIT %s) s",
                        (entity_type, self._dims, k),
                    ).fetchone()
                    if stored is None or stored["n"] >= k:
                        continue
                    conn.execute(f"DROP INDEX IF EXISTS {_index_name(entity_type, self._dims)}")
            except psycopg.errors.LockNotAvailable:
                continue
            self._deferred.add(entity_type)

    def _build_indexes(self, types: set[str]) -> None:
        for entity_type in sorted(types):
            try:
                with self.store.connection() as conn, conn.transaction():
                    conn.execute(f"SET LOCAL maintenance_work_mem = '{_BUILD_MEMORY}'")
                    conn.execute(f"SET LOCAL statement_timeout = '{_BUILD_TIMEOUT_S}s'")
                    conn.execute(_index_ddl(entity_type, self._dims))
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                pass  # another process built it at the same moment
            self._deferred.discard(entity_type)

    def _repair_indexes(self) -> None:
        """Build the per-type indexes of this enricher's vector size that are missing: left dropped by a
        stopped bulk load (this enricher's own excepted), or never made (the first model of this size)."""
        with self.store.connection() as conn:
            present = {r["indexname"] for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings'")}
        self._build_indexes({t for t in EMBEDDED_TYPES
                             if _index_name(t, self._dims) not in present and t not in self._deferred})

    def _done(self, tokens: Sequence[str]) -> None:
        if not tokens:
            return
        with self.store.connection() as conn:
            conn.execute("DELETE FROM enrich_pending WHERE token = ANY(%s::uuid[])", (list(tokens),))

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        # Binary COPY into a scratch table, then one upsert: vectors are not rendered and parsed as
        # 1536-number text (what made row-by-row inserts ~4x slower).
        with self.store.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _hissuno_vectors (project_id uuid, entity_type text,"
                " entity_id uuid, model text, text_hash text, embedding vector, dims integer)"
                " ON COMMIT DELETE ROWS"
            )
            copy_rows(cur, "_hissuno_vectors", _VECTOR_COLS, rows,
                      ("uuid", "text", "uuid", "text", "text", "vector", "int4"))
            # One row per (entity, model): vectors of another model stay until this one replaces them
            # everywhere (search and the graph read the current model only).
            cur.execute(
                f"INSERT INTO embeddings ({', '.join(_VECTOR_COLS)}) SELECT {', '.join(_VECTOR_COLS)}"
                " FROM _hissuno_vectors"
                " ON CONFLICT (entity_type, entity_id, model) DO UPDATE SET text_hash = EXCLUDED.text_hash,"
                " embedding = EXCLUDED.embedding, dims = EXCLUDED.dims, updated_at = now()"
            )

    def _write_texts(self, rows: list[tuple[Any, ...]]) -> None:
        """The lexical side of search; rewritten only when the text changed (not on a model switch)."""
        with self.store.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _hissuno_texts (entity_type text, entity_id uuid, project_id uuid,"
                " text_hash text, body text) ON COMMIT DELETE ROWS"
            )
            copy_rows(cur, "_hissuno_texts", _TEXT_COLS, rows, ("text", "uuid", "uuid", "text", "text"))
            cur.execute(
                "INSERT INTO search_text (entity_type, entity_id, project_id, text_hash, body)"
                " SELECT DISTINCT ON (entity_type, entity_id) entity_type, entity_id, project_id, text_hash, body"
                " FROM _hissuno_texts"
                " ON CONFLICT (entity_type, entity_id) DO UPDATE SET text_hash = EXCLUDED.text_hash,"
                " body = EXCLUDED.body, project_id = EXCLUDED.project_id, updated_at = now()"
                " WHERE search_text.text_hash <> EXCLUDED.text_hash"
            )

    def _link(self, items: list[_Item], embedder: Embedder) -> None:
        """Semantic edges from each item to its nearest vectors of the other graph types.

        Linear in the number of items: entities with equal text (hence equal vectors) share one
        nearest-neighbour lookup, and each lookup is an index scan of one type's HNSW index
        (``ORDER BY embedding <=> v LIMIT k`` under ``entity_type = '<literal>'`` matches that type's
        partial index), never a comparison with every stored vector.
        """
        if not items:
            return
        threshold = graph_threshold(embedder)
        by_type: dict[str, list[str]] = {}
        for i in items:
            if i.entity_type in GRAPH_TYPES:
                by_type.setdefault(i.entity_type, []).append(i.entity_id)
        for entity_type, ids in by_type.items():
            sql = link_sql(entity_type, embedder.dims)
            for start in range(0, len(ids), _LINK_BATCH):
                with self.store.connection() as conn, conn.transaction():
                    _bound_link_statement(conn)
                    conn.execute(sql, {"type": entity_type, "ids": ids[start : start + _LINK_BATCH],
                                       "model": embedder.model, "t": threshold})

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


def graph_threshold(embedder: Embedder) -> float:
    """``HISSUNO_GRAPH_THRESHOLD`` when set, else the model's own measured threshold."""
    value = os.environ.get("HISSUNO_GRAPH_THRESHOLD")
    if value is None:
        return float(getattr(embedder, "graph_threshold", 0.6))
    try:
        return float(value)
    except ValueError:
        msg = f"HISSUNO_GRAPH_THRESHOLD: expected a number between 0 and 1; got {value!r}"
        raise ValueError(msg) from None


def _index_name(entity_type: str, dims: int) -> str:
    assert entity_type in EMBEDDED_TYPES  # a constant, never input: part of DDL
    return f"embeddings_hnsw_{entity_type}_{int(dims)}"


def _index_ddl(entity_type: str, dims: int) -> str:
    """The partial HNSW index of the type's vectors of one size (the shape migration 0012 makes)."""
    return (f"CREATE INDEX IF NOT EXISTS {_index_name(entity_type, dims)} ON embeddings"
            f" USING hnsw ((embedding::vector({int(dims)})) vector_cosine_ops)"
            f" WHERE entity_type = '{entity_type}' AND dims = {int(dims)}")


def sized(column: str, dims: int) -> str:
    """``column`` as the indexed expression of its size: a vector query must name it exactly so for the
    planner to use that size's HNSW index (``dims`` is the embedder's own number, never input)."""
    return f"{column}::vector({int(dims)})"


def _nearest(target: str, dims: int) -> str:
    # ``target`` is one of GRAPH_TYPES (a constant, never input): inlined so the planner matches the
    # type's partial HNSW index, which a bound parameter would not; so is the size.
    assert target in GRAPH_TYPES
    dist = f"{sized('o.embedding', dims)} <=> {sized('r.embedding', dims)}"
    return (f"(SELECT o.entity_type, o.entity_id, {dist} AS dist FROM embeddings o"
            f" WHERE o.entity_type = '{target}' AND o.dims = {int(dims)} AND o.project_id = r.project_id"
            f" AND o.model = r.model ORDER BY {dist} LIMIT {NEIGHBOURS})")


def link_sql(entity_type: str, dims: int) -> str:
    """The statement that links a batch (``ids``) of ``entity_type`` entities (vectors of ``dims``) to
    their neighbours."""
    union = "\n UNION ALL ".join(_nearest(t, dims) for t in GRAPH_TYPES if t != entity_type)
    first = "(e.entity_type, e.entity_id::text) < (n.entity_type, n.entity_id::text)"
    return f"""
        WITH reps AS MATERIALIZED (
            -- One lookup per distinct vector: equal text hashes under one model are equal vectors.
            SELECT DISTINCT ON (e.project_id, e.text_hash) e.project_id, e.text_hash, e.model, e.embedding
            FROM embeddings e
            WHERE e.entity_type = %(type)s AND e.entity_id = ANY(%(ids)s::uuid[]) AND e.model = %(model)s
        ), near AS MATERIALIZED (
            SELECT r.project_id, r.text_hash, n.entity_type, n.entity_id, n.sim
            FROM reps r CROSS JOIN LATERAL (
                SELECT u.entity_type, u.entity_id, 1 - u.dist AS sim
                FROM ({union}) u
                ORDER BY u.dist
                LIMIT {NEIGHBOURS}
            ) n
            WHERE n.sim >= %(t)s
        )
        INSERT INTO entity_relationships
            (project_id, source_type, source_id, target_type, target_id, strategy, similarity, metadata)
        SELECT DISTINCT ON (1, 2, 3, 4, 5) e.project_id,
               CASE WHEN {first} THEN e.entity_type ELSE n.entity_type END,
               CASE WHEN {first} THEN e.entity_id ELSE n.entity_id END,
               CASE WHEN {first} THEN n.entity_type ELSE e.entity_type END,
               CASE WHEN {first} THEN n.entity_id ELSE e.entity_id END,
               'semantic', n.sim, jsonb_build_object('model', e.model)
        FROM embeddings e
        JOIN near n ON n.project_id = e.project_id AND n.text_hash = e.text_hash
        WHERE e.entity_type = %(type)s AND e.entity_id = ANY(%(ids)s::uuid[]) AND e.model = %(model)s
        ON CONFLICT (project_id, source_type, source_id, target_type, target_id) DO UPDATE
            SET similarity = EXCLUDED.similarity, updated_at = now()
    """


def _bound_link_statement(conn: Any) -> None:
    # The linking statement is the store's heaviest: bounded on its own, so a runaway plan fails the
    # run (retriably) instead of running for minutes after its client died.
    conn.execute(f"SET LOCAL statement_timeout = '{LINK_STATEMENT_TIMEOUT_S}s'")
    conn.execute(_ITERATIVE_SCAN)
    # Before the first ANALYZE (a first sync) the planner prefers the (project, type, model) b-tree and
    # a sort of every vector of the type: brute force per entity, quadratic over a sync. Sorting is the
    # only step an HNSW scan avoids, so discouraging it leaves the index scan the cheapest plan.
    conn.execute("SET LOCAL enable_sort = off")
    # Likewise the fan-out of each lookup to the entities sharing its vector: estimated at one row
    # per side, it became a nested loop over every pair of a batch; a hash join is linear.
    conn.execute("SET LOCAL enable_nestloop = off")


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
        conn.execute(_SEARCH_SCAN)
        rows = conn.execute(nearest_sql(entity_type, emb.dims, f" AND NOT {_DELETED[entity_type]}"),
                            {"v": vec, "p": project_id, "m": emb.model, "k": limit}).fetchall()
    return [(r["id"], float(r["sim"])) for r in rows]


def nearest_sql(entity_type: str, dims: int, extra: str = "") -> str:
    """The nearest ``%(k)s`` vectors of ``entity_type`` to ``%(v)s`` (``dims`` long) under model ``%(m)s``
    in project ``%(p)s``, with ``extra`` conditions on ``e``: as ``id`` and cosine ``sim``."""
    # The type and size are inlined (constants, never input) so the planner matches their partial HNSW index.
    assert entity_type in _DELETED
    dist = f"{sized('e.embedding', dims)} <=> %(v)s"
    return (f"SELECT e.entity_id::text AS id, 1 - ({dist}) AS sim FROM embeddings e"
            f" WHERE e.entity_type = '{entity_type}' AND e.dims = {int(dims)} AND e.project_id = %(p)s"
            f" AND e.model = %(m)s{extra} ORDER BY {dist} LIMIT %(k)s")
