"""Knowledge search for webhook handlers: the kit protocol, the store query, the inbox's services."""

from __future__ import annotations

from typing import Any

from hissuno_airflow.kit.knowledge import KnowledgeHit, search_knowledge
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync
from hissuno_airflow.runtime.webhooks.inbox import _WebhookServices
from hissuno_airflow.store.knowledge_search import search_chunks


def _chunks(store: Any, project_id: str) -> list[dict[str, Any]]:
    with store.connection() as conn:
        return conn.execute("SELECT c.id::text AS id, c.chunk_text, s.id::text AS source_id FROM knowledge_chunks c"
                            " JOIN knowledge_sources s ON s.id = c.source_id WHERE c.project_id = %s",
                            (project_id,)).fetchall()


def test_chunk_search_finds_the_chunk_a_question_quotes(store: Any, sample_connection: Any) -> None:
    sid = "knowledge:help-center"
    enable_stream(store, sample_connection.id, sid)
    assert run_stream_sync(sample_connection.id, sid, SyncPlan(), store=store).status == "success"
    chunks = _chunks(store, sample_connection.project_id)
    assert chunks
    target = chunks[len(chunks) // 2]
    hits = search_chunks(store, sample_connection.project_id, target["chunk_text"], limit=3)
    assert hits and hits[0].text == target["chunk_text"] and hits[0].source_id == target["source_id"]
    assert hits == sorted(hits, key=lambda h: -h.score)
    # Another project's question finds nothing of this one.
    assert search_chunks(store, "00000000-0000-0000-0000-0000000000ff", target["chunk_text"]) == []
    # The inbox's services offer the same search to a webhook handler, scoped to the connection's project.
    services = _WebhookServices(None, None, store, sample_connection.project_id)  # type: ignore[arg-type]
    assert search_knowledge(services, target["chunk_text"], 1)[0].text == target["chunk_text"]
    # A deleted source leaves the results.
    with store.connection() as conn:
        conn.execute("UPDATE knowledge_sources SET deleted_at = now() WHERE id = %s", (target["source_id"],))
    assert all(h.source_id != target["source_id"]
               for h in search_chunks(store, sample_connection.project_id, target["chunk_text"], limit=3))


def test_services_without_search_give_no_hits() -> None:
    class Plain:
        pass

    class Fixed:
        def search_knowledge(self, query: str, limit: int = 5) -> list[KnowledgeHit]:
            return [KnowledgeHit(text=query, score=1.0, source_id="s")][:limit]

    assert search_knowledge(Plain(), "anything") == []
    assert search_knowledge(Fixed(), "   ") == []
    assert search_knowledge(Fixed(), "how?", 1)[0].text == "how?"
