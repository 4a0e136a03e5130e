"""Ingest primitives on a real PostgreSQL + pgvector: idempotent, bulk, enriched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from hissuno_airflow import settings
from hissuno_airflow.kit import ContactRecord, Message, SessionRecord
from hissuno_airflow.store import embedder as emb
from hissuno_airflow.store import enrich as enrich_mod
from hissuno_airflow.store.enrich import search
from hissuno_airflow.store.ingest import StreamIngest

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _session(i: int, *, extra: str = "", n: int = 10, topic: str | None = None) -> SessionRecord:
    topic = topic or f"question number {i} about invoices"
    return SessionRecord(
        external_id=f"s{i}", source="sample", name=f"Conversation {i}", updated_at=T0 + timedelta(minutes=i),
        user_metadata={"email": f"user{i}@example.org"},
        messages=[{"sender_type": "user" if k % 2 == 0 else "human_agent",
                   "content": f"{topic} message {k}{extra}"} for k in range(n)],
    )


def _count(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchone()["n"]


@pytest.fixture
def counting_embedder():
    e = emb.HashEmbedder()
    emb.set_embedder(e)
    yield e
    emb.set_embedder(None)


def _ingest(store, conn_id, stream="sessions", **kw):
    return StreamIngest(store, project_id=settings.default_project_id(), connection_id=conn_id,
                        stream_id=stream, **kw)


def test_sessions_are_idempotent_and_updates_replace_messages(store, sample_connection, counting_embedder):
    cid = sample_connection.id
    ing = _ingest(store, cid)
    results = [ing.session(_session(i)) for i in range(20)]
    ing.close()
    assert {r.action for r in results} == {"created"}
    assert _count(store, "SELECT count(*) AS n FROM sessions") == 20
    assert _count(store, "SELECT count(*) AS n FROM session_messages") == 200
    calls_after_first = counting_embedder.calls

    ing = _ingest(store, cid)
    again = [ing.session(_session(i)) for i in range(20)]
    ing.close()
    assert {r.action for r in again} == {"unchanged"}
    assert [r.id for r in again] == [r.id for r in results]
    assert counting_embedder.calls == calls_after_first, "unchanged text must not be embedded again"
    with store.connection() as c:
        stamp = c.execute("SELECT max(updated_at) AS t FROM sessions").fetchone()["t"]

    ing = _ingest(store, cid)
    changed = ing.session(_session(3, extra=" (edited)", n=12))
    ing.close()
    assert changed.action == "updated" and changed.id == results[3].id
    assert _count(store, "SELECT count(*) AS n FROM sessions") == 20
    assert _count(store, "SELECT count(*) AS n FROM session_messages WHERE session_id = %s", changed.id) == 12
    assert _count(store, "SELECT count(*) AS n FROM session_messages") == 202
    assert _count(store, "SELECT count(*) AS n FROM sessions WHERE updated_at > %s", stamp) == 1
    assert counting_embedder.calls == calls_after_first + 1


def test_invalid_record_goes_to_ingest_errors_and_the_run_continues(store, sample_connection):
    ing = _ingest(store, sample_connection.id)
    bad = ing.session(external_id="x1", source="", messages=[{"sender_type": "robot", "content": "hi"}])
    good = ing.session(_session(1))
    ing.close()
    assert bad.action == "failed" and "source" in bad.error and "sender_type" in bad.error
    assert good.action == "created"
    with store.connection() as c:
        rows = c.execute("SELECT kind, external_id, reason FROM ingest_errors").fetchall()
    assert [(r["kind"], r["external_id"]) for r in rows] == [("sessions", "x1")]


def test_nul_characters_from_a_provider_do_not_fail_the_batch(store, sample_connection):
    # PostgreSQL text and jsonb refuse U+0000: one such field used to fail the whole batch write.
    ing = _ingest(store, sample_connection.id)
    rec = ing.session(external_id="n\x001", source="sample", name="bin\x00ary", user_metadata={"k\x00": "v\x00"},
                      messages=[{"sender_type": "user", "content": "pasted \x00 bytes"}])
    other = ing.session(_session(2))
    ing.close()
    assert (rec.action, other.action) == ("created", "created")
    with store.connection() as c:
        row = c.execute("SELECT s.name, s.user_metadata, m.content FROM sessions s JOIN session_messages m"
                        " ON m.session_id = s.id WHERE s.name LIKE 'bin%'").fetchone()
        errors = c.execute("SELECT count(*) AS n FROM ingest_errors").fetchone()["n"]
    assert (row["name"], row["user_metadata"], row["content"]) == ("binary", {"k": "v"}, "pasted  bytes")
    assert errors == 0


def test_nul_characters_inside_message_objects_are_removed_by_their_session(store, sample_connection):
    # A message has no NUL check of its own: its session's check covers Message objects as well as dicts,
    # whether the session is built by the plugin or from the fields ingest is given.
    built = SessionRecord(external_id="m1", source="sample", messages=[Message(sender_type="user", content="a\x00b")])
    assert built.messages[0].content == "ab"
    ing = _ingest(store, sample_connection.id)
    made = ing.session(external_id="m2", source="sample", name="objects",
                       messages=[Message(sender_type="user", content="pasted \x00 bytes", sender_name="N\x00N")])
    ing.close()
    assert made.action == "created"
    with store.connection() as c:
        row = c.execute("SELECT m.content, m.sender_name FROM sessions s JOIN session_messages m ON m.session_id = s.id"
                        " WHERE s.name = 'objects'").fetchone()
    assert (row["content"], row["sender_name"]) == ("pasted  bytes", "NN")


def test_a_metadata_value_json_cannot_hold_fails_that_record_alone(store, sample_connection):
    # Free maps take any value; one that cannot be stored as JSON is that record's failure, not the run's.
    ing = _ingest(store, sample_connection.id)
    bad = ing.session(external_id="odd", source="sample", user_metadata={"handle": object()})
    good = ing.session(_session(1))
    ing.close()
    assert bad.action == "failed" and "invalid record" in (bad.error or "")
    assert good.action == "created"
    with store.connection() as c:
        rows = c.execute("SELECT kind, external_id FROM ingest_errors").fetchall()
    assert [(r["kind"], r["external_id"]) for r in rows] == [("sessions", "odd")]


def test_free_maps_keep_values_json_has_no_type_for_as_their_json_text(store, sample_connection):
    # Metadata and custom fields take any value pydantic can write as JSON (times, decimals, ids, sets, NaN):
    # each is stored as that JSON, as the content hash sees it, instead of failing the whole batch's write.
    odd = {"since": datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "price": Decimal("1.50"), "ids": {7},
           "key": uuid.UUID(int=1), "ratio": float("nan")}
    ing = _ingest(store, sample_connection.id)
    session = ing.session(external_id="odd", source="sample", name="odd", user_metadata=odd, custom_fields=odd)
    others = [ing.issue(external_id="i", name="Issue", description="d", custom_fields=odd),
              ing.contact(external_id="c", email="odd@acme.example", custom_fields=odd),
              ing.company(external_id="co", domain="acme.example", custom_fields=odd),
              ing.session(_session(1))]
    refused = ing.session(external_id="bad", source="", user_metadata=odd)  # kept in ingest_errors, NaN and all
    ing.close()
    assert [r.action for r in (session, *others)] == ["created"] * 5 and refused.action == "failed"
    want = {"since": "2026-01-02T03:04:00Z", "price": "1.50", "ids": [7],
            "key": "00000000-0000-0000-0000-000000000001", "ratio": None}
    with store.connection() as c:
        row = c.execute("SELECT user_metadata, custom_fields FROM sessions WHERE name = 'odd'").fetchone()
        kept = [c.execute(f"SELECT custom_fields FROM {t}").fetchone()["custom_fields"]
                for t in ("issues", "contacts", "companies")]
        error = c.execute("SELECT external_id, record FROM ingest_errors").fetchone()
    assert row["user_metadata"] == want and row["custom_fields"] == want
    assert kept == [want] * 3
    assert error["external_id"] == "bad" and error["record"]["user_metadata"]["ratio"] is None


def test_contacts_unique_by_lower_email_and_linked_to_company_by_domain(store, sample_connection):
    ing = _ingest(store, sample_connection.id, stream="contacts")
    a = ing.contact(ContactRecord(external_id="c1", email="Ana@Acme.com", name="Ana"))
    b = ing.contact(external_id="c2", email="ana@acme.com", title="CTO")
    ing.contact(external_id="c3", email="bob@gmail.com", name="Bob")
    comp = ing.company(external_id="co1", domain="https://www.ACME.com/", name="Acme")
    ing.close()
    assert a.id == b.id
    with store.connection() as c:
        rows = c.execute("SELECT email, name, title, company_id::text AS co FROM contacts ORDER BY email").fetchall()
        edges = c.execute("SELECT strategy, count(*) AS n FROM entity_relationships GROUP BY 1").fetchall()
    assert len(rows) == 2
    ana = next(r for r in rows if r["email"].lower() == "ana@acme.com")
    assert ana["name"] == "Ana" and ana["title"] == "CTO" and ana["co"] == comp.id
    assert next(r for r in rows if r["email"] == "bob@gmail.com")["co"] is None
    assert {"email_domain": 1} == {r["strategy"]: r["n"] for r in edges}


def test_session_metadata_email_links_existing_contact(store, sample_connection):
    ing = _ingest(store, sample_connection.id)
    contact = ing.contact(external_id="c", email="User5@example.org", name="U5")
    s = ing.session(_session(5))
    ing.close()
    with store.connection() as c:
        row = c.execute("SELECT contact_id::text AS c FROM sessions WHERE id = %s", (s.id,)).fetchone()
        edge = c.execute("SELECT count(*) AS n FROM entity_relationships WHERE strategy = 'metadata_email'").fetchone()
    assert row["c"] == contact.id and edge["n"] == 1


def test_semantic_search_finds_the_right_session_among_many(store, sample_connection, monkeypatch):
    # The HNSW path, as on a store with statistics: on a fresh table the planner sorts every vector
    # (exact), which hid a recall gap that a CI run with earlier tests' statistics showed.
    monkeypatch.setattr(enrich_mod, "_SEARCH_SCAN", enrich_mod._SEARCH_SCAN + "; SET LOCAL enable_sort = off")
    ing = _ingest(store, sample_connection.id)
    topics = ["billing invoice refund", "password reset email", "dashboard chart colors", "api rate limit",
              "mobile app crash on startup", "export to csv", "team permissions admin", "dark mode theme"]
    ids = {}
    for i in range(200):
        t = topics[i % len(topics)]
        ids[i] = ing.session(_session(i, topic=f"{t} variant {i}")).id
    target = ing.session(SessionRecord(
        external_id="needle", source="sample", name="Kubernetes helm chart rollback",
        messages=[{"sender_type": "user", "content": "Our helm chart rollback on kubernetes leaves orphaned pods"}]))
    ing.close()
    hits = search(store, "helm rollback orphaned pods", project_id=settings.default_project_id())
    assert hits[0][0] == target.id
    assert hits[0][1] > hits[1][1]


def test_semantic_edges_link_an_issue_to_the_session_about_it_and_not_to_an_unrelated_one(store, sample_connection):
    # The default local embedder hashes words and bigrams, so "the same problem" here shares words.
    ing = _ingest(store, sample_connection.id)
    session = ing.session(SessionRecord(
        external_id="csv", source="sample", name="CSV export of the dashboard fails",
        messages=[{"sender_type": "user", "content": "Exporting our dashboard to CSV fails with a 500 error"},
                  {"sender_type": "human_agent", "content": "Thanks, we are looking into it."}]))
    ing.close()
    issues = _ingest(store, sample_connection.id, stream="issues")
    same = issues.issue(external_id="i-csv", name="Dashboard CSV export fails",
                        description="Exporting a dashboard to CSV fails with a 500 error for some customers")
    other = issues.issue(external_id="i-dark", name="Add a dark mode theme",
                         description="Users would like a dark colour scheme in the mobile app settings")
    issues.close()
    with store.connection() as c:
        edges = c.execute("SELECT source_type, source_id::text AS s, target_type, target_id::text AS t, similarity"
                          " FROM entity_relationships WHERE strategy = 'semantic'").fetchall()
    pairs = {frozenset({(e["source_type"], e["s"]), (e["target_type"], e["t"])}): e["similarity"] for e in edges}
    linked = frozenset({("session", session.id), ("issue", same.id)})
    assert linked in pairs, edges
    assert pairs[linked] >= 0.6
    assert not any(("issue", other.id) in pair for pair in pairs), edges


def test_knowledge_is_chunked_and_embedded_and_rechunked_on_change(store, sample_connection):
    body = "# Guide\n\n" + "\n\n".join(f"## Part {k}\n\n" + (f"Words about part {k}. ") * 40 for k in range(4))
    ing = _ingest(store, sample_connection.id, stream="knowledge")
    k = ing.knowledge(external_id="doc1", name="Guide", content=body, type="docs_portal")
    ing.close()
    n1 = _count(store, "SELECT count(*) AS n FROM knowledge_chunks WHERE source_id = %s", k.id)
    assert n1 >= 4
    assert _count(store, "SELECT count(*) AS n FROM embeddings WHERE entity_type = 'knowledge_chunk'") == n1
    ing = _ingest(store, sample_connection.id, stream="knowledge")
    k2 = ing.knowledge(external_id="doc1", name="Guide", content="# Guide\n\nShort now." * 1, type="docs_portal")
    ing.close()
    assert k2.id == k.id and k2.action == "updated"
    assert _count(store, "SELECT count(*) AS n FROM knowledge_chunks WHERE source_id = %s", k.id) == 1
    assert _count(store, "SELECT count(*) AS n FROM knowledge_sources") == 1


def test_a_batch_writes_its_contacts_together_and_keeps_the_id_of_a_person_already_stored(store, sample_connection):
    # A person an older version stored under a random id, before this stream ever saw them.
    with store.connection() as c:
        legacy = c.execute(
            "INSERT INTO contacts (project_id, name, email) VALUES (%s, 'Old Ana', 'ana@acme.com')"
            " RETURNING id::text AS id", (settings.default_project_id(),)).fetchone()["id"]
    ing = _ingest(store, sample_connection.id, batch_size=1000)
    for i in range(60):
        email = "Ana@Acme.com" if i == 7 else f"person{i}@firm{i % 5}.com"
        ing.contact(external_id=f"c{i}", email=email, name=f"Person {i}")
        ing.session(SessionRecord(external_id=f"s{i}", source="sample", name=f"Conversation {i}",
                                  contact_email=email, messages=[{"sender_type": "user", "content": f"hello {i}"}]))
    ing.company(external_id="firm0", domain="firm0.com", name="Firm Zero")  # after its people, same batch
    ing.close()
    with store.connection() as c:
        # One transaction wrote all sixty people (per-person upserts committed one each).
        assert c.execute("SELECT count(DISTINCT xmin::text) AS n FROM contacts WHERE email LIKE 'person%%'"
                         ).fetchone()["n"] == 1
        ana = c.execute("SELECT id::text AS id, name FROM contacts WHERE lower(email) = 'ana@acme.com'").fetchall()
        session = c.execute("SELECT s.contact_id::text AS c FROM sessions s JOIN integration_synced_records r"
                            " ON r.hissuno_id = s.id WHERE r.external_id = 's7'").fetchone()
        synced = c.execute("SELECT hissuno_id::text AS h FROM integration_synced_records"
                           " WHERE hissuno_kind = 'contacts' AND external_id = 'c7'").fetchone()
        vectors = c.execute("SELECT count(*) AS n FROM embeddings WHERE entity_type = 'contact'"
                            " AND entity_id = %s", (legacy,)).fetchone()["n"]
        firm0 = c.execute("SELECT count(*) AS n FROM contacts k JOIN companies co ON co.id = k.company_id"
                          " WHERE co.domain = 'firm0.com'").fetchone()["n"]
    assert ana == [{"id": legacy, "name": "Old Ana"}]  # fill_nulls: the stored name stays
    assert session["c"] == synced["h"] == legacy and vectors == 1
    assert firm0 == 12  # its people joined the company written after them


def test_a_person_whose_email_changed_gets_a_row_of_the_new_address(store, sample_connection):
    ing = _ingest(store, sample_connection.id, stream="contacts")
    old = ing.contact(external_id="c1", email="bo@old.example", name="Bo")
    ing.close()
    ing = _ingest(store, sample_connection.id, stream="contacts")
    new = ing.contact(external_id="c1", email="bo@new.example", name="Bo")
    ing.close()
    with store.connection() as c:
        rows = c.execute("SELECT id::text AS id, email FROM contacts ORDER BY email").fetchall()
        synced = c.execute("SELECT hissuno_id::text AS h FROM integration_synced_records"
                           " WHERE external_id = 'c1'").fetchone()
    assert [r["email"] for r in rows] == ["bo@new.example", "bo@old.example"]
    assert synced["h"] == next(r["id"] for r in rows if r["email"] == "bo@new.example") != old.id
    assert new.action == "updated"


def test_an_address_too_long_to_index_is_refused_by_name_and_the_batch_goes_on(store, sample_connection):
    ing = _ingest(store, sample_connection.id, stream="contacts")
    bad = ing.contact(external_id="c1", email="a" * 400 + "@example.org")
    good = ing.contact(external_id="c2", email="ok@example.org")
    ing.close()
    assert bad.action == "failed" and "email" in (bad.error or "")
    assert good.action == "created"
    assert _count(store, "SELECT count(*) AS n FROM contacts") == 1
    assert _count(store, "SELECT count(*) AS n FROM ingest_errors WHERE external_id = 'c1'") == 1


def test_a_failed_full_text_write_fails_the_enrichment_and_keeps_its_pending_rows(store, sample_connection,
                                                                                    monkeypatch):
    # search_text is written in a second session beside the vectors: its failure must still reach the
    # run, and the pending rows stay for ``resume`` (nothing reports done what is not written).
    ing = _ingest(store, sample_connection.id)
    for i in range(5):
        ing.session(_session(i))
    ing.flush()

    def broken(self, rows):
        raise RuntimeError("the full-text write failed")

    monkeypatch.setattr(enrich_mod.Enricher, "_write_texts", broken)
    with pytest.raises(RuntimeError, match="full-text write"):
        ing.enricher.run()
    assert _count(store, "SELECT count(*) AS n FROM enrich_pending") == 5
    assert _count(store, "SELECT count(*) AS n FROM search_text") == 0
    monkeypatch.undo()
    assert ing.enricher.resume(sample_connection.id) == 5
    assert _count(store, "SELECT count(*) AS n FROM search_text") == 5
    assert _count(store, "SELECT count(*) AS n FROM enrich_pending") == 0


def test_queued_texts_leave_memory_once_written_and_are_read_back_to_embed(store, sample_connection, monkeypatch):
    # Between enrichment passes a sync holds up to 20,000 queued entities: their texts (kilobytes each)
    # live in enrich_pending once the batch is written, not in the process.
    monkeypatch.setattr(enrich_mod, "_WRITE_BATCH", 7)  # several read-backs
    ing = _ingest(store, sample_connection.id)
    for i in range(20):
        ing.session(_session(i, topic=f"kubernetes pod eviction {i}" if i == 13 else None))
    ing.flush()
    queued = list(ing.enricher._items.values())
    assert len(queued) == 20 and all(i.text is None and i.hash for i in queued)
    ing.close()
    found = search(store, "kubernetes pod eviction", project_id=settings.default_project_id(), limit=1)
    assert found and found[0][0] == ing._map()[("sessions", "s13")][0]
    assert _count(store, "SELECT count(*) AS n FROM search_text WHERE body LIKE '%%kubernetes%%'") == 1


def test_an_unchanged_record_without_a_vector_of_the_current_model_is_written_again(store, sample_connection,
                                                                                     monkeypatch):
    class Renamed(emb.HashEmbedder):
        model = "hissuno-hash-renamed"

    emb.set_embedder(emb.HashEmbedder())
    try:
        ing = _ingest(store, sample_connection.id)
        assert [ing.session(_session(i)).action for i in range(3)] == ["created"] * 3
        ing.close()
        emb.set_embedder(Renamed())  # HISSUNO_EMBEDDER changed between runs
        ing = _ingest(store, sample_connection.id)
        assert [ing.session(_session(i)).action for i in range(3)] == ["updated"] * 3  # re-embedded
        ing.close()
        ing = _ingest(store, sample_connection.id)
        assert [ing.session(_session(i)).action for i in range(3)] == ["unchanged"] * 3
        ing.close()
    finally:
        emb.set_embedder(None)
    assert _count(store, "SELECT count(*) AS n FROM embeddings WHERE model = 'hissuno-hash-renamed'") == 3


def test_a_contact_naming_its_company_by_url_joins_the_company_of_that_domain(store, sample_connection):
    ing = _ingest(store, sample_connection.id, stream="contacts")
    ing.contact(external_id="c1", email="ana@mail.example", company_domain="https://www.Acme.com/")
    ing.close()
    with store.connection() as c:
        row = c.execute("SELECT co.domain FROM contacts k JOIN companies co ON co.id = k.company_id").fetchall()
        edges = c.execute("SELECT count(*) AS n FROM entity_relationships WHERE strategy = 'email_domain'"
                          ).fetchone()["n"]
    assert row == [{"domain": "acme.com"}] and edges == 1
