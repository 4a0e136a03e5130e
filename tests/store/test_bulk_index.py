"""A first sync loads a type's vectors without its HNSW index and builds the index once afterwards.

Guards both halves: the index is back (and used) when the load is done, and an index a stopped load left
dropped is built again by the next enrichment run, so no crash leaves search and linking without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hissuno_airflow.store import enrich
from hissuno_airflow.store.db import Store
from hissuno_airflow.store.embedder import HashEmbedder
from hissuno_airflow.store.enrich import Enricher, search
from hissuno_airflow.store.migrate import migrate
from tests.fixtures.store import scratch_database

PROJECT = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def fresh_store(database_url: str) -> Iterator[Store]:
    with scratch_database(database_url, "bulkidx") as url:
        migrate(url)
        store = Store(url)
        with store.connection() as conn:
            conn.execute("INSERT INTO projects (id, name) VALUES (%s, 'p') ON CONFLICT DO NOTHING", (PROJECT,))
        yield store
        store.close()


def _session_indexes(store: Store) -> list[str]:
    with store.connection() as conn:
        return [r["indexname"] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings' AND indexname LIKE '%%session_1536'")]


def _queue(enricher: Enricher, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for k, sid in enumerate(ids):
        enricher.queue("session", sid, f"conversation {k} about topic{k % 50} and invoice{k % 7}", graph=False)
    return ids


def test_a_bulk_load_builds_the_index_after_the_vectors(fresh_store, monkeypatch) -> None:
    monkeypatch.setattr(enrich, "BULK_MIN", 50)
    enricher = Enricher(fresh_store, PROJECT, HashEmbedder())
    dropped: list[list[str]] = []
    write = enricher._write
    monkeypatch.setattr(enricher, "_write", lambda rows: (dropped.append(_session_indexes(fresh_store)), write(rows)))
    ids = _queue(enricher, 120)
    assert enricher.run() == 120
    assert dropped and dropped[0] == []  # the vectors went in without the session index
    assert _session_indexes(fresh_store) == ["embeddings_hnsw_session_1536"]
    found = search(fresh_store, "conversation 7 about topic7 and invoice0", project_id=PROJECT,
                   embedder=HashEmbedder())
    assert found[0][0] == ids[7]
    # The next load is small against what is stored: the index stays and takes the vectors one by one.
    _queue(enricher, 60)
    dropped.clear()
    enricher.run()
    assert dropped == [["embeddings_hnsw_session_1536"]]


def test_an_index_a_stopped_bulk_load_left_dropped_is_built_by_the_next_run(fresh_store, monkeypatch) -> None:
    monkeypatch.setattr(enrich, "BULK_MIN", 50)
    killed = Enricher(fresh_store, PROJECT, HashEmbedder())
    _queue(killed, 80)

    def die(rows: object) -> None:
        raise KeyboardInterrupt  # the process stops mid-load

    monkeypatch.setattr(killed, "_write", die)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert _session_indexes(fresh_store) == []
    nxt = Enricher(fresh_store, PROJECT, HashEmbedder())
    nxt.queue("contact", str(uuid.uuid4()), "someone", graph=False)
    nxt.run()
    assert _session_indexes(fresh_store) == ["embeddings_hnsw_session_1536"]


class _CountingEmbedder(HashEmbedder):
    """Records the texts it is asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.texts.extend(texts)
        return super().embed(texts)


def test_a_run_embeds_each_distinct_text_once_across_write_batches(fresh_store, monkeypatch) -> None:
    # Vectors are made per write batch and dropped after their last use: a text that repeats in a later
    # batch must still be embedded once, and every item gets its vector.
    embedder = _CountingEmbedder()
    enricher = Enricher(fresh_store, PROJECT, embedder)
    monkeypatch.setattr(enrich, "_WRITE_BATCH", 50)
    ids = [str(uuid.uuid4()) for _ in range(230)]
    for k, sid in enumerate(ids):
        text = f"repeated text {k % 7}" if k % 2 else f"unique text {k}"
        enricher.queue("session", sid, text, graph=False)
    assert enricher.run() == 230
    assert len(embedder.texts) == len(set(embedder.texts)) == 7 + 115
    with fresh_store.connection() as conn:
        stored = conn.execute("SELECT count(*) AS n, count(DISTINCT text_hash) AS h FROM embeddings").fetchone()
    assert (stored["n"], stored["h"]) == (230, 122)
