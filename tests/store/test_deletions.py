"""``ctx.ingest.delete``: soft deletes on a real PostgreSQL + pgvector, and their counts in a real run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hissuno_airflow import settings
from hissuno_airflow.kit import InputError, ProgressEvent, SessionRecord
from hissuno_airflow.plugins.sample import data
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store.enrich import search
from hissuno_airflow.store.ingest import StreamIngest

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TOPICS = ["billing invoice refund", "password reset email", "dashboard chart colors", "api rate limit",
          "mobile app crash on startup", "export to csv", "team permissions admin", "dark mode theme"]


def _session(i: int, topic: str | None = None, email: str | None = None) -> SessionRecord:
    topic = topic or TOPICS[i % len(TOPICS)]
    return SessionRecord(
        external_id=f"s{i}", source="sample", name=f"Conversation {i} about {topic}",
        updated_at=T0 + timedelta(minutes=i), user_metadata={"email": email or f"user{i}@example.org"},
        messages=[{"sender_type": "user", "content": f"{topic}: please help"},
                  {"sender_type": "human_agent", "content": "Looking into it"}],
    )


def _ingest(store, conn_id, stream="sessions", events=None, **kw):
    on_event = events.append if events is not None else None
    return StreamIngest(store, project_id=settings.default_project_id(), connection_id=conn_id,
                        stream_id=stream, on_event=on_event, **kw)


def _one(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchone()


def _deleted_at(store, table, entity_id):
    return _one(store, f"SELECT deleted_at FROM {table} WHERE id = %s", entity_id)["deleted_at"]


def _hit_ids(store, query, entity_type="session"):
    return [i for i, _ in search(store, query, project_id=settings.default_project_id(),
                                 entity_type=entity_type, limit=100)]


def test_delete_marks_the_entity_deleted_keeps_it_and_is_idempotent(store, sample_connection):
    cid = sample_connection.id
    ing = _ingest(store, cid)
    made = [ing.session(_session(i)) for i in range(3)]
    ing.close()

    events: list[ProgressEvent] = []
    ing = _ingest(store, cid, events=events)
    first = ing.delete("sessions", "s1")
    again = ing.delete("session", "s1")  # the primitive's name is the same kind
    never = ing.delete("sessions", "no-such-id")
    ing.close()
    assert (first.action, first.id, first.kind) == ("deleted", made[1].id, "sessions")
    assert (again.action, again.id) == ("unchanged", made[1].id)
    assert (never.action, never.id) == ("missing", None)
    assert [e.type for e in events] == ["deleted", "skipped", "skipped"]

    # Marked, not removed: the row and its messages stay; the other sessions are untouched.
    assert _deleted_at(store, "sessions", made[1].id) is not None
    assert _deleted_at(store, "sessions", made[0].id) is None and _deleted_at(store, "sessions", made[2].id) is None
    assert _one(store, "SELECT count(*) n FROM session_messages WHERE session_id = %s", made[1].id)["n"] == 2
    rec = _one(store, "SELECT deleted_at, hissuno_id::text AS hid FROM integration_synced_records"
               " WHERE connection_id = %s AND external_id = 's1'", cid)
    assert rec["deleted_at"] is not None and rec["hid"] == made[1].id

    # A later run (state read back from the database) sees it deleted too.
    ing = _ingest(store, cid)
    assert ing.delete("sessions", "s1").action == "unchanged"
    assert ing.get_synced_ids() == {"s0", "s2"}
    assert not ing.is_synced("s1") and ing.is_synced("s0")
    with pytest.raises(InputError, match="delete kind"):
        ing.delete("tickets", "s0")
    ing.close()


def test_deleted_entities_do_not_appear_in_search(store, sample_connection):
    cid = sample_connection.id
    ing = _ingest(store, cid)
    for i in range(16):
        ing.session(_session(i))
    needle = ing.session(SessionRecord(
        external_id="needle", source="sample", name="Kubernetes helm chart rollback",
        messages=[{"sender_type": "user", "content": "Our helm chart rollback on kubernetes leaves orphaned pods"}]))
    ing.close()
    kn = _ingest(store, cid, stream="knowledge")
    doc = kn.knowledge(external_id="doc1", name="Helm rollbacks", type="docs_portal",
                       content="# Helm\n\n## Rollback\n\nA helm rollback leaves orphaned pods; delete them by label.")
    kn.close()
    query = "helm rollback orphaned pods"
    assert _hit_ids(store, query)[0] == needle.id
    assert doc.id in _hit_ids(store, query, "knowledge_source")
    chunk_ids = {r["id"] for r in _all(store, "SELECT id::text AS id FROM knowledge_chunks WHERE source_id = %s",
                                          doc.id)}
    assert chunk_ids and chunk_ids <= set(_hit_ids(store, query, "knowledge_chunk"))

    ing = _ingest(store, cid)
    ing.delete("sessions", "needle")
    ing.close()
    kn = _ingest(store, cid, stream="knowledge")
    kn.delete("knowledge", "doc1")
    kn.close()
    hits = _hit_ids(store, query)
    assert needle.id not in hits and len(hits) == 16, "every live session is still found, the deleted one never"
    assert doc.id not in _hit_ids(store, query, "knowledge_source")
    assert not chunk_ids & set(_hit_ids(store, query, "knowledge_chunk")), "a deleted source's chunks are gone too"
    # The vectors are kept (a restore needs no re-embedding), only hidden.
    assert _one(store, "SELECT count(*) n FROM embeddings WHERE entity_id = %s", needle.id)["n"] == 1


def _all(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchall()


def test_reingesting_a_deleted_external_id_restores_it(store, sample_connection):
    cid = sample_connection.id
    ing = _ingest(store, cid)
    made = ing.session(_session(7))
    ing.close()
    ing = _ingest(store, cid)
    ing.delete("sessions", "s7")
    ing.close()
    assert made.id not in _hit_ids(store, TOPICS[7])

    # The provider restored it without changing it: the same content still clears the mark.
    ing = _ingest(store, cid)
    back = ing.session(_session(7))
    ing.close()
    assert (back.action, back.id) == ("updated", made.id)
    assert _deleted_at(store, "sessions", made.id) is None
    assert _one(store, "SELECT deleted_at FROM integration_synced_records WHERE external_id = 's7'")["deleted_at"] \
        is None
    assert made.id in _hit_ids(store, TOPICS[7])
    assert _one(store, "SELECT count(*) n FROM sessions")["n"] == 1
    ing = _ingest(store, cid)
    assert ing.get_synced_ids() == {"s7"}
    assert ing.session(_session(7)).action == "unchanged"  # restored once; now an ordinary unchanged record
    ing.close()

    # Deleted and restored within one batch (before any flush) ends live; made and deleted ends deleted.
    ing = _ingest(store, cid)
    ing.delete("sessions", "s7")
    ing.session(_session(7))
    late = ing.session(_session(8))
    ing.delete("sessions", "s8")
    ing.close()
    assert _deleted_at(store, "sessions", made.id) is None
    assert _deleted_at(store, "sessions", late.id) is not None


def test_graph_edges_of_a_deleted_entity_remain(store, sample_connection):
    cid = sample_connection.id
    ing = _ingest(store, cid, stream="contacts")
    ing.contact(external_id="c1", email="ana@acme.com", name="Ana")
    ing.company(external_id="co1", domain="acme.com", name="Acme")
    ing.close()
    ing = _ingest(store, cid)
    s = ing.session(_session(1, email="ana@acme.com"))
    ing.close()
    iss = _ingest(store, cid, stream="issues")
    iss.issue(external_id="i1", name="Invoice refund fails", description="billing invoice refund broken",
              type="bug", session_external_id="s1")
    iss.close()
    edges_sql = ("SELECT strategy, source_type, target_type FROM entity_relationships"
                 " WHERE source_id = %s OR target_id = %s ORDER BY 1, 2, 3")
    before = _all(store, edges_sql, s.id, s.id)
    assert {e["strategy"] for e in before} >= {"programmatic", "metadata_email"}

    ing = _ingest(store, cid)
    ing.delete("sessions", "s1")
    ing.close()
    assert _deleted_at(store, "sessions", s.id) is not None
    assert _all(store, edges_sql, s.id, s.id) == before
    assert _one(store, "SELECT contact_id::text AS c FROM sessions WHERE id = %s", s.id)["c"] is not None


def test_a_shared_contact_stays_visible_while_another_source_has_it(store, sample_connection):
    cid = sample_connection.id
    a = _ingest(store, cid, stream="contacts")
    ca = a.contact(external_id="a-1", email="Bo@Example.org", name="Bo")
    a.close()
    b = _ingest(store, cid, stream="crm_contacts")
    cb = b.contact(external_id="b-1", email="bo@example.org", title="CTO")
    b.close()
    assert ca.id == cb.id

    a = _ingest(store, cid, stream="contacts")
    assert a.delete("contact", "a-1").action == "deleted"
    a.close()
    assert _deleted_at(store, "contacts", ca.id) is None, "the crm stream still has this contact"
    assert ca.id in _hit_ids(store, "Bo example", "contact")

    b = _ingest(store, cid, stream="crm_contacts")
    assert b.delete("contacts", "b-1").action == "deleted"
    b.close()
    assert _deleted_at(store, "contacts", ca.id) is not None
    assert ca.id not in _hit_ids(store, "Bo example", "contact")

    # Either source restoring it brings it back.
    a = _ingest(store, cid, stream="contacts")
    assert a.contact(external_id="a-1", email="Bo@Example.org", name="Bo").action == "updated"
    a.close()
    assert _deleted_at(store, "contacts", ca.id) is None


def test_a_run_counts_deletions_of_the_sample_provider(store, sample_connection):
    cid = sample_connection.id
    workspace = sample_connection.external_account_id
    enable_stream(store, cid, "sessions", filters={"size": 30})
    enable_stream(store, cid, "issues", filters={"size": 30})
    first = run_stream_sync(cid, "sessions", store=store)
    issues = run_stream_sync(cid, "issues", store=store)
    assert first.status == issues.status == "success"
    assert first.counts == {"found": 30, "synced": 30, "skipped": 0, "failed": 0, "deleted": 0}
    # Delete two conversations that raised an issue and one that did not; none of them the newest (the
    # incremental boundary record, which every next run sees again).
    raised = {r["external_id"].removeprefix("issue-") for r in _all(
        store, "SELECT external_id FROM integration_synced_records WHERE stream_id = 'issues'")}
    older = {r["external_id"] for r in _all(
        store, "SELECT external_id FROM integration_synced_records WHERE stream_id = 'sessions'"
               " AND hissuno_kind = 'sessions' AND source_updated_at < %s", first.cursor_after)}
    at_boundary = 30 - len(older)
    with_issue = sorted(older & raised)[:2]
    gone = [*with_issue, *sorted(older - raised)[:1]]
    assert len(with_issue) == 2 and len(gone) == 3, "the sample data has conversations of both sorts"

    data.delete(workspace, gone)
    seen: list[tuple[str, int]] = []
    second = run_stream_sync(cid, "sessions", store=store,
                             on_progress=lambda e, counts: seen.append((e.type, counts["deleted"])))
    assert second.status == "success", second.error
    # (the records at the cursor come back unchanged, as in every incremental run)
    assert second.counts == {"found": at_boundary, "synced": 0, "skipped": at_boundary, "failed": 0, "deleted": 3}
    assert [d for t, d in seen if t == "deleted"] == [1, 2, 3], "each deletion is a live progress event"
    run = _one(store, "SELECT counts FROM integration_sync_runs WHERE id = %s", second.run_id)
    assert run["counts"]["deleted"] == 3
    assert _one(store, "SELECT last_sync_counts c FROM integration_streams WHERE connection_id = %s"
                       " AND stream_id = 'sessions'", cid)["c"]["deleted"] == 3
    assert _one(store, "SELECT count(*) n FROM sessions WHERE deleted_at IS NOT NULL")["n"] == 3
    assert _one(store, "SELECT count(*) n FROM sessions")["n"] == 30
    # The tombstones moved the cursor: the next incremental run sees only the boundary again (the newest
    # tombstones, deleted before: unchanged) and deletes nothing.
    third = run_stream_sync(cid, "sessions", store=store)
    assert third.status == "success" and third.cursor_after == second.cursor_after > first.cursor_after
    assert third.counts == {"found": 0, "synced": 0, "skipped": 3, "failed": 0, "deleted": 0}

    # The issues stream deletes the issues of deleted conversations; the others were never issues.
    iss = run_stream_sync(cid, "issues", store=store)
    assert iss.counts["deleted"] == len(with_issue)
    # skipped: the boundary record (as always) and the conversation that never raised an issue ("missing")
    assert iss.counts["skipped"] == iss.counts["found"] + 1
    assert _one(store, "SELECT count(*) n FROM issues WHERE deleted_at IS NOT NULL")["n"] == len(with_issue)

    # The provider restores one: it comes back as the same entity.
    hid = _one(store, "SELECT hissuno_id::text h FROM integration_synced_records WHERE stream_id = 'sessions'"
                      " AND external_id = %s", gone[0])["h"]
    data.touch(workspace, [gone[0]])
    fourth = run_stream_sync(cid, "sessions", store=store)
    assert fourth.counts["synced"] == 1 and fourth.counts["deleted"] == 0
    assert _deleted_at(store, "sessions", hid) is None
    assert _one(store, "SELECT count(*) n FROM sessions WHERE deleted_at IS NOT NULL")["n"] == 2
    assert _one(store, "SELECT count(*) n FROM sessions")["n"] == 30
