"""``GET /api/search`` and the Integrations page's search box."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hissuno_airflow import settings
from hissuno_airflow.kit.records import IssueRecord, KnowledgeRecord, SessionRecord
from hissuno_airflow.store import embedder as emb
from hissuno_airflow.store.ingest import StreamIngest
from tests.fixtures.store import connect_sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def corpus(web):
    emb.set_embedder(None)
    conn = connect_sample(web.store, "search-ws", epoch="2026-01-01T00:00:00+00:00", every_seconds=600)
    pid = settings.default_project_id()
    ing = StreamIngest(web.store, project_id=pid, connection_id=conn.id, stream_id="sessions")
    ing.session(SessionRecord(external_id="chat-1", source="sample", name="Stuck after SSO", updated_at=T0,
                              messages=[{"sender_type": "user",
                                         "content": "User is stuck in a login loop after the SSO redirect"}]))
    ing.close()
    ing = StreamIngest(web.store, project_id=pid, connection_id=conn.id, stream_id="issues")
    ing.issue(IssueRecord(external_id="INC-4821", name="Webhook deliveries duplicated",
                          description="Tracked as INC-4821: every event posts two callbacks", type="bug"))
    ing.close()
    ing = StreamIngest(web.store, project_id=pid, connection_id=conn.id, stream_id="knowledge")
    ing.knowledge(KnowledgeRecord(external_id="kb-retries", name="How webhook retries work",
                                  url="https://docs.example.com/webhooks/retries",
                                  content="An event is retried with backoff until your endpoint answers 2xx."))
    ing.close()
    return conn


def test_search_api_returns_readable_hits(web, corpus):
    r = web.client.get("/api/search", params={"q": "customer cannot log in after single sign-on", "limit": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == emb.get_embedder().model and body["reembedding_pending"] == 0
    hit = body["results"][0]
    assert (hit["kind"], hit["title"], hit["external_id"]) == ("session", "Stuck after SSO", "chat-1")
    assert hit["plugin_id"] == "sample" and hit["connection_id"] == corpus.id and hit["score"] > 0
    ident = web.client.get("/api/search", params={"q": "INC-4821", "kind": "issue"}).json()["results"]
    assert ident[0]["external_id"] == "INC-4821" and "«INC-4821»" in ident[0]["snippet"]
    doc = web.client.get("/api/search", params={"q": "retry backoff", "kind": "knowledge"}).json()["results"][0]
    assert (doc["title"], doc["url"], doc["external_id"]) == (
        "How webhook retries work", "https://docs.example.com/webhooks/retries", "kb-retries")
    other = web.client.get("/api/search", params={"q": "login", "connection_id": "nosuch_conn"}).json()
    assert other["results"] == []


@pytest.mark.parametrize("params,field", [({"q": ""}, "q"), ({"q": "x", "limit": "many"}, "limit"),
                                          ({"q": "x", "kind": "ticket"}, "kind"),
                                          ({"q": "x", "since": "soon"}, "since"),
                                          ({"q": "x", "project_id": "nope"}, "project_id")])
def test_search_api_bad_input_is_a_400_naming_the_field(web, corpus, params, field):
    r = web.client.get("/api/search", params=params)
    assert r.status_code == 400 and r.json()["field"] == field and "Traceback" not in r.text


def test_search_api_needs_an_identity_and_the_page_has_the_box(web):
    assert web.anon.get("/api/search", params={"q": "x"}).status_code == 401
    page = web.anon.get("/").text
    assert 'id="search-form"' in page and "search.js" in page
    js = web.anon.get("/static/search.js")
    assert js.status_code == 200 and "/search?" in js.text


def test_after_a_model_switch_each_request_reembeds_a_bounded_batch(web, monkeypatch):
    from hissuno_airflow.web import search_api

    conn = connect_sample(web.store, "switch-ws", epoch="2026-01-01T00:00:00+00:00", every_seconds=600)
    emb.set_embedder(emb.HashEmbedder())  # what the records were embedded with before the switch
    try:
        ing = StreamIngest(web.store, project_id=settings.default_project_id(), connection_id=conn.id,
                           stream_id="sessions")
        for ext, name, text in (("s-1", "Stuck after SSO", "User is stuck in a login loop after the SSO redirect"),
                                ("s-2", "VAT on invoice", "Invoice PDF is missing the VAT number"),
                                ("s-3", "Empty export", "Export to CSV produces an empty file")):
            ing.session(SessionRecord(external_id=ext, source="sample", name=name, updated_at=T0,
                                      messages=[{"sender_type": "user", "content": text}]))
        ing.close()
    finally:
        emb.set_embedder(None)  # the default model from here on
    monkeypatch.setattr(search_api, "REEMBED_PER_REQUEST", 2)
    q = {"q": "customer cannot log in after single sign-on", "kind": "session"}
    first = web.client.get("/api/search", params=q).json()
    assert first["model"] == emb.get_embedder().model and first["reembedding_pending"] == 1
    second = web.client.get("/api/search", params=q).json()
    assert second["reembedding_pending"] == 0
    assert second["results"][0]["external_id"] == "s-1" and second["results"][0]["similarity"] is not None
