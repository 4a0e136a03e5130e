"""Hybrid search over ingested records: meaning and exact identifiers both find their records, the
results say what and where each one is, and the filters hold. Runs on the default model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hissuno_airflow import settings
from hissuno_airflow.kit.errors import InputError
from hissuno_airflow.kit.records import IssueRecord, KnowledgeRecord, SessionRecord
from hissuno_airflow.store import embedder as emb
from hissuno_airflow.store.ingest import StreamIngest
from hissuno_airflow.store.search import search
from tests.fixtures.store import connect_sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_MODEL = emb.WordLlamaEmbedder()


@pytest.fixture
def model():
    emb.set_embedder(_MODEL)
    yield _MODEL
    emb.set_embedder(None)


def _ingest(store, cid, stream, records):
    ing = StreamIngest(store, project_id=settings.default_project_id(), connection_id=cid, stream_id=stream)
    for r in records:
        getattr(ing, {"sessions": "session", "issues": "issue", "knowledge": "knowledge"}[stream])(r)
    ing.close()


def _session(ext, name, text):
    return SessionRecord(external_id=ext, source="sample", name=name, updated_at=T0,
                         messages=[{"sender_type": "user", "content": text}])


@pytest.fixture
def corpus(store, sample_connection, model):
    cid = sample_connection.id
    _ingest(store, cid, "sessions", [
        _session("chat-1", "Stuck after SSO", "User is stuck in a login loop after the SSO redirect"),
        _session("chat-2", "VAT on invoice", "Invoice PDF is missing the VAT number"),
        _session("chat-3", "Empty export", "Export to CSV produces an empty file"),
        _session("chat-4", "Dark theme", "Please add a dark mode to the dashboard"),
    ])
    _ingest(store, cid, "issues", [
        IssueRecord(external_id="INC-4821", name="Webhook deliveries duplicated",
                    description="Tracked as INC-4821: every event posts two callbacks", type="bug"),
        IssueRecord(external_id="INC-4822", name="Timezone offset on reports",
                    description="Tracked as INC-4822: reports show UTC times", type="bug"),
        IssueRecord(external_id="INC-4823", name="Slack alerts silent",
                    description="Tracked as INC-4823: no messages reach the channel", type="bug"),
        IssueRecord(external_id="INC-4824", name="Upload stops at 99%",
                    description="Tracked as INC-4824: large attachments never finish", type="bug"),
        IssueRecord(external_id="INC-4825", name="Two-factor codes rejected",
                    description="Tracked as INC-4825: valid codes are refused", type="bug"),
    ])
    _ingest(store, cid, "knowledge", [
        KnowledgeRecord(external_id="kb-sso", name="Troubleshooting identity provider sign-in",
                        url="https://docs.example.com/sso",
                        content="When single sign-on redirects loop, check the identity provider's callback URL."),
    ])
    return cid


def test_meaning_finds_a_record_with_no_word_in_common(store, corpus):
    hits = search(store, "customer cannot log in after single sign-on", project_id=settings.default_project_id(),
                  kinds=["session"], limit=3)
    assert hits[0].title == "Stuck after SSO"
    assert hits[0].similarity is not None and hits[0].similarity > hits[1].similarity


def test_identifiers_find_their_records_in_hybrid_not_by_vector_alone(store, corpus):
    pid = settings.default_project_id()
    idents = [f"INC-482{k}" for k in range(1, 6)]
    for ident in idents:
        hybrid = search(store, ident, project_id=pid, limit=3)
        assert hybrid[0].external_id == ident and hybrid[0].kind == "issue"
        assert f"«{ident}»" in hybrid[0].snippet  # the matching part, marked
    # What the fusion adds: the model alone does not tell these identifiers apart.
    vector_top = [search(store, i, project_id=pid, limit=1, mode="vector")[0].external_id for i in idents]
    assert vector_top != idents


def test_results_say_what_and_where_each_record_is(store, corpus):
    hits = search(store, "identity provider sign-in redirects", project_id=settings.default_project_id(),
                  kinds=["knowledge"], limit=1)
    h = hits[0].to_dict()
    assert h["kind"] == "knowledge" and h["title"] == "Troubleshooting identity provider sign-in"
    assert h["url"] == "https://docs.example.com/sso" and h["external_id"] == "kb-sso"
    assert h["plugin_id"] == "sample" and h["connection_id"] == corpus and h["connection_label"]
    assert h["score"] > 0 and h["snippet"]


def test_filters_kind_connection_project_time_and_deleted(store, corpus, model):
    pid = settings.default_project_id()
    q = "login loop single sign-on"
    kinds = {h.kind for h in search(store, q, project_id=pid, limit=20)}
    assert kinds == {"session", "issue", "knowledge"}
    assert {h.kind for h in search(store, q, project_id=pid, kinds=["issue"], limit=20)} == {"issue"}
    other = connect_sample(store, "other-ws", epoch="2026-01-01T00:00:00+00:00", every_seconds=600)
    _ingest(store, other.id, "sessions", [_session("o-1", "Other login", "Login loop after SSO again")])
    only_other = search(store, q, project_id=pid, connection_id=other.id, limit=20)
    assert [h.external_id for h in only_other] == ["o-1"]
    assert search(store, q, project_id="00000000-0000-0000-0000-0000000000ff", limit=20) == []
    now = datetime.now(UTC)
    assert search(store, q, project_id=pid, since=now + timedelta(hours=1), limit=20) == []
    assert search(store, q, project_id=pid, until=now - timedelta(days=3650), limit=20) == []
    assert search(store, q, project_id=pid, since=now - timedelta(hours=1), limit=20)
    ing = StreamIngest(store, project_id=pid, connection_id=corpus, stream_id="sessions")
    ing.delete("sessions", "chat-1")
    ing.close()
    assert "chat-1" not in {h.external_id for h in search(store, q, project_id=pid, limit=20)}


@pytest.mark.parametrize("kwargs,field", [({"limit": 0}, "limit"), ({"mode": "fuzzy"}, "mode"),
                                          ({"kinds": ["ticket"]}, "kind")])
def test_bad_input_names_the_field(store, model, kwargs, field):
    with pytest.raises(InputError) as exc:
        search(store, "x", project_id=settings.default_project_id(), **kwargs)
    assert exc.value.field == field
    with pytest.raises(InputError, match="query: expected some text"):
        search(store, "  ", project_id=settings.default_project_id())



def test_the_vector_lookup_is_an_hnsw_index_scan(store, model):
    """At a size where an index matters, search's own vector statement (deleted filter included) is an
    HNSW scan of the type's partial index, not a sort of every vector."""
    import uuid

    import numpy as np
    from pgvector import Vector

    from hissuno_airflow.store.enrich import _index_ddl

    pid = settings.default_project_id()
    rng = np.random.default_rng(1)
    with store.connection() as c, c.transaction(), c.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS embeddings_hnsw_session_256")  # built once after the load: seconds, not 20
        with cur.copy("COPY embeddings (project_id, entity_type, entity_id, model, text_hash, embedding, dims)"
                      " FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["uuid", "text", "uuid", "text", "text", "vector", "int4"])
            for _ in range(2000):
                v = rng.standard_normal(256).astype(np.float32)
                cp.write_row((uuid.UUID(pid), "session", uuid.uuid4(), model.model, "h", Vector(v / np.linalg.norm(v)), 256))
        cur.execute(_index_ddl("session", 256))
        cur.execute("ANALYZE embeddings")
    plan = _session_lookup_plan(store, model, pid)
    assert "Index Scan using embeddings_hnsw_session_256" in plan, plan[:600]


def test_leaving_out_deleted_records_reads_their_index_not_every_record(store, model):
    """Search's deleted filter (an anti-join on the entity's table) reads the partial index of deleted ids:
    a sequential scan of every session cost 14 of the 19.5 ms of a lookup at 100,000 records."""
    pid = settings.default_project_id()
    with store.connection() as c, c.transaction():
        c.execute("INSERT INTO sessions (id, project_id, name, source) SELECT gen_random_uuid(), %s,"
                  " 'chat ' || g, 'sample' FROM generate_series(1, 20000) g", (pid,))
        c.execute("UPDATE sessions SET deleted_at = now() WHERE name = 'chat 7'")
        c.execute("ANALYZE sessions")
    plan = _session_lookup_plan(store, model, pid)
    assert "Seq Scan on sessions" not in plan and "sessions_deleted_ids" in plan, plan[:900]


def test_hybrid_search_finds_a_unique_record_among_thousands_of_near_duplicates(store, sample_connection, model,
                                                                                 monkeypatch):
    # Two thousand templated tickets and one unlike them: the HNSW graph has almost no way into the
    # odd one (a vector-only scan walks the near-duplicates and misses it), so its words must find it.
    from hissuno_airflow.store import search as search_mod

    monkeypatch.setattr(search_mod, "_SEARCH_SCAN", search_mod._SEARCH_SCAN + "; SET LOCAL enable_sort = off")
    topics = ["billing invoice refund", "password reset email", "dashboard chart colors", "api rate limit"]
    tickets = [SessionRecord(external_id=f"t{i}", source="sample", name=f"Conversation {i}", updated_at=T0,
                             messages=[{"sender_type": "user", "content": f"{topics[i % 4]} variant {i} message {k}"}
                                       for k in range(10)]) for i in range(2000)]
    needle = _session("needle", "Kubernetes helm chart rollback",
                      "Our helm chart rollback on kubernetes leaves orphaned pods")
    _ingest(store, sample_connection.id, "sessions", [*tickets, needle])
    pid = settings.default_project_id()
    hits = search(store, "helm rollback orphaned pods", project_id=pid, kinds=["session"])
    assert hits[0].external_id == "needle"
    # A vector-only scan usually misses it (the gap the words close, see enrich.py), but not always: the
    # HNSW graph is built with random levels, and a clean-clone run once reached the needle. Whether the
    # index happens to reach it is not the behaviour under test; hybrid finding it first, every time, is.


def _session_lookup_plan(store, model, pid):
    """EXPLAIN of search's vector lookup of sessions (no filters but the project's)."""
    from pgvector import Vector

    from hissuno_airflow.store.search import _filters, vector_sql

    extra, params = _filters("session", None, None, None, "e")
    with store.connection() as c, c.transaction():
        return "\n".join(r["QUERY PLAN"] for r in c.execute(
            "EXPLAIN " + vector_sql("session", model.dims, extra),
            {"v": Vector(model.embed(["login"])[0]), "p": pid, "m": model.model, "k": 40, **params}))
