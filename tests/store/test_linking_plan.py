"""Graph linking stays linear on a store without planner statistics (a first sync).

Guards what made a first sync quadratic: per entity, a brute-force sort of every vector of the other
types, repeated for each entity even when many share one vector. On a freshly migrated database
(never analysed), the linking statement must look up each distinct vector once, through the target
type's HNSW index, and still find the right neighbours.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from hissuno_airflow.store.db import Store
from hissuno_airflow.store.embedder import HashEmbedder
from hissuno_airflow.store.enrich import GRAPH_TYPES, Enricher, _bound_link_statement, link_sql
from hissuno_airflow.store.migrate import migrate
from tests.fixtures.store import scratch_database

PROJECT = "00000000-0000-0000-0000-000000000001"
TOPICS = ["invoice export fails with a server error", "slack notifications for new feedback",
          "login loop after enabling single sign-on"]


@pytest.fixture
def fresh_store(database_url: str) -> Iterator[Store]:
    with scratch_database(database_url, "linkplan") as url:
        migrate(url)
        store = Store(url)
        yield store
        store.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_linking_looks_up_each_distinct_vector_once_through_the_hnsw_index(fresh_store: Store) -> None:
    enricher = Enricher(fresh_store, PROJECT, HashEmbedder())
    sessions = [str(uuid.uuid4()) for _ in range(60)]
    contacts = {str(uuid.uuid4()): TOPICS[k % 3] for k in range(15)}
    for k, sid in enumerate(sessions):
        enricher.queue("session", sid, TOPICS[k % 3])
    for cid, text in contacts.items():
        enricher.queue("contact", cid, text, graph=False)
    enricher.run()

    # Right neighbours: each session is linked to exactly the 5 contacts that share its topic.
    with fresh_store.connection() as c:
        edges = c.execute("SELECT source_id::text AS s, target_id::text AS t, source_type, target_type"
                          " FROM entity_relationships WHERE strategy = 'semantic'").fetchall()
    linked: dict[str, set[str]] = {}
    for e in edges:
        session, contact = (e["s"], e["t"]) if e["source_type"] == "session" else (e["t"], e["s"])
        linked.setdefault(session, set()).add(contact)
    assert linked == {sid: {cid for cid, text in contacts.items() if text == TOPICS[k % 3]}
                      for k, sid in enumerate(sessions)}

    # The plan, on tables the planner has never seen statistics for.
    with fresh_store.connection() as c:
        assert c.execute("SELECT count(*) AS n FROM pg_stats WHERE tablename = 'embeddings'").fetchone() == {"n": 0}
        _bound_link_statement(c)
        row = c.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + link_sql("session", HashEmbedder.dims),
                        {"type": "session", "ids": sessions, "model": HashEmbedder.model, "t": 0.6}).fetchone()
        c.rollback()
    assert row is not None
    nodes = list(_nodes(row["QUERY PLAN"][0]["Plan"]))
    lookups = {n["Index Name"]: n["Actual Loops"] for n in nodes if n.get("Index Name", "").startswith("embeddings_hnsw")}
    # One index scan per other graph type, run once per distinct vector (3), not per session (60).
    assert lookups == {f"embeddings_hnsw_{t}_{HashEmbedder.dims}": len(TOPICS) for t in GRAPH_TYPES if t != "session"}
    # No brute force: nothing sorts vectors by distance.
    assert not [n for n in nodes if n["Node Type"] == "Sort" and "<=>" in " ".join(n.get("Sort Key", []))]
