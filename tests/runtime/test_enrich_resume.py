"""Enrichment a killed run did not finish is resumed by the next run (issue 9 item 5): the records count as
unchanged, so without ``enrich_pending`` nothing would ever link them."""

from __future__ import annotations

import pytest

from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store.enrich import Enricher


class Killed(BaseException):
    """The process dies here: nothing after this point runs, no except clause sees it."""


def _n(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchone()["n"]


# Killed in the semantic pass (vectors written, no edges yet: every neighbour counts as similar so that
# the pass has edges to make), or in the contact-link pass that follows it.
@pytest.mark.parametrize(("stage", "threshold"), [("_link", "-1"), ("_link_emails", "2")])
def test_a_kill_during_enrichment_is_repaired_by_the_next_incremental_run(store, sample_connection, monkeypatch,
                                                                           stage, threshold):
    monkeypatch.setenv("HISSUNO_GRAPH_THRESHOLD", threshold)
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 30})

    def die(self, *args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(Enricher, stage, die)
        with pytest.raises(Killed):
            run_stream_sync(cid, "sessions", store=store)
    # The entities committed; their enrichment did not.
    assert _n(store, "SELECT count(*) n FROM sessions") == 30
    assert _n(store, "SELECT count(*) n FROM entity_relationships WHERE strategy = 'metadata_email'") == 0
    assert _n(store, "SELECT count(*) n FROM entity_relationships WHERE strategy = 'semantic'") == 0
    assert _n(store, "SELECT count(*) n FROM enrich_pending WHERE entity_type = 'session'") == 30
    # A killed process keeps its lease until it lapses (HISSUNO_RUN_LEASE_SECONDS): let it lapse now.
    with store.connection() as c:
        c.execute("UPDATE integration_sync_runs SET lease_expires_at = now() - interval '1 second'"
                  " WHERE status = 'in_progress'")

    events = []
    r = run_stream_sync(cid, "sessions", store=store, on_progress=lambda e, c: events.append(e))
    assert r.status == "success" and r.counts["synced"] == 0  # nothing changed at the provider
    assert r.counts["repaired"] >= 30
    assert any(e.type == "repaired" and "enrichment" in (e.message or "") for e in events)
    # Each session is linked to its contact (by the contact-link pass, or already by similarity).
    assert _n(store, "SELECT count(DISTINCT s.id) n FROM sessions s JOIN entity_relationships r"
                     " ON r.source_type = 'contact' AND r.source_id = s.contact_id AND r.target_id = s.id") == 30
    assert _n(store, "SELECT count(DISTINCT e.entity_id) n FROM embeddings e WHERE entity_type = 'session'") == 30
    if stage == "_link":
        assert _n(store, "SELECT count(DISTINCT s.id) n FROM sessions s JOIN entity_relationships r"
                         " ON r.strategy = 'semantic' AND s.id IN (r.source_id, r.target_id)") == 30
    else:
        assert _n(store, "SELECT count(DISTINCT target_id) n FROM entity_relationships"
                         " WHERE strategy = 'metadata_email' AND target_type = 'session'") == 30
    assert _n(store, "SELECT count(*) n FROM enrich_pending") == 0
    with store.connection() as c:
        counts = c.execute("SELECT counts FROM integration_sync_runs WHERE id = %s", (r.run_id,)).fetchone()["counts"]
    assert counts["repaired"] == r.counts["repaired"]

    # Once repaired, a run has nothing left to repair.
    again = run_stream_sync(cid, "sessions", store=store)
    assert "repaired" not in again.counts


def test_a_finished_run_leaves_nothing_pending(store, sample_connection):
    cid = sample_connection.id
    enable_stream(store, cid, "sessions", filters={"size": 10})
    r = run_stream_sync(cid, "sessions", store=store)
    assert r.status == "success" and "repaired" not in r.counts
    assert _n(store, "SELECT count(*) n FROM enrich_pending") == 0


def test_a_webhook_drain_killed_during_enrichment_is_finished_by_the_next_drain(web, monkeypatch):
    import json

    from hissuno_airflow.runtime.webhooks import process_inbox
    from tests.fixtures.web import sign, verification_secret
    from tests.web.test_webhooks import make_connection

    cid = make_connection(web.store, "wh-github", verification_secret("github"))
    path = f"/api/plugins/webhook/wh-github/{cid}"
    body = json.dumps({"id": "i1", "title": "one"}).encode()
    assert web.anon.post(path, content=body, headers=sign("github", body, web.url + path)).status_code == 200

    def die(self, *args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(Enricher, "_write", die)
        with pytest.raises(Killed):
            process_inbox(cid, "events", store=web.store)
    # The event and its issue committed together; the vector did not.
    assert _n(web.store, "SELECT count(*) n FROM webhook_events WHERE status = 'done'") == 1
    assert _n(web.store, "SELECT count(*) n FROM embeddings WHERE entity_type = 'issue'") == 0
    res = process_inbox(cid, "events", store=web.store)
    assert (res.done, res.failed) == (0, 0)
    assert _n(web.store, "SELECT count(*) n FROM embeddings WHERE entity_type = 'issue'") == 1
    assert _n(web.store, "SELECT count(*) n FROM enrich_pending") == 0
