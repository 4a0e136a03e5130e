"""A webhook wake-up runs the stream's DAG, which drains the inbox in order (SyncOperator + process_inbox)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from hissuno_airflow import registry
from hissuno_airflow.dag_factory import build_dag, load_manifest
from hissuno_airflow.kit import ApiKeyAuth, AuthResult, Icon, Stream, WebhookCtx, define_plugin
from hissuno_airflow.kit.signatures import GitHubSignature
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.runtime.webhooks import IntakeRequest, NullDispatcher, receive_webhook
from hissuno_airflow.store import connections as repo

from ..fixtures.airflow import run_dag
from .conftest import make_connection

SECRET = "hook-secret-123456"


def _on_event(ctx: WebhookCtx) -> None:
    body = ctx.payload
    if body.get("explode"):
        raise RuntimeError("handler refused this event")
    ctx.ingest.session(external_id=body["id"], source="hooky", name=body["title"],
                       messages=[{"sender_type": "user", "content": body["text"]}])


@pytest.fixture
def hooky():
    plugin = define_plugin(
        id="hooky", name="Hooky", description="webhook-only test plugin", category="sessions", icon=Icon(),
        auth=ApiKeyAuth(fields=(), test=lambda c, x: AuthResult(external_account_id="a", account_label="A")),
        webhook_signature=GitHubSignature(secret_env=None, secret_setting="webhook_secret"),
        streams={"events": Stream(kind="sessions", label="Events", webhook=_on_event)},
    )
    registry.register(plugin, source="tests")
    yield plugin
    registry.unregister("hooky")


def _post(conn_id: str, body: dict, delivery: str) -> int:
    raw = json.dumps(body).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    res = receive_webhook("hooky", IntakeRequest("POST", "http://127.0.0.1/x", {
        "X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}, raw),
        connection_id=conn_id, dispatcher=NullDispatcher())
    return res.status


def test_webhook_run_drains_the_inbox_in_order(store, hooky, airflow_clean):
    conn = make_connection(store, "hooky")
    repo.update_connection(store, conn.id, settings={"webhook_secret": SECRET})
    credential_store(store, "db").save(conn, {})
    row = repo.upsert_stream(store, connection_id=conn.id, plugin_id="hooky", stream_id="events",
                             stream_kind="sessions", enabled=True, frequency="webhook")
    assert row.frequency == "webhook"
    for i in range(3):
        assert _post(conn.id, {"id": f"e{i}", "title": f"Event {i}", "text": f"hello {i}"}, f"d{i}") == 200
    assert _post(conn.id, {"id": "bad", "explode": True}, "d-bad") == 200
    assert _post(conn.id, {"id": "e0", "title": "Event 0", "text": "hello 0"}, "d0") == 200  # replay

    (manifest_row,) = [r for r in load_manifest() if r["connection_id"] == conn.id]
    dag = build_dag(manifest_row)
    dag.get_task("sync").retries = 0  # dag.test() would sit through the real retry back-off
    assert type(dag.timetable).__name__ == "NullTimetable"  # webhook streams have no schedule
    run = run_dag(dag, run_conf={"triggered_by": "webhook"})
    assert run.state == "failed"  # one event failed: the run is red so someone looks
    with store.connection() as c:
        events = c.execute("SELECT event_id, status, attempts, error FROM webhook_events ORDER BY received_at").fetchall()
        names = [r["name"] for r in c.execute("SELECT name FROM sessions ORDER BY name").fetchall()]
    assert [(e["event_id"], e["status"]) for e in events] == [
        ("d0", "done"), ("d1", "done"), ("d2", "done"), ("d-bad", "failed")]
    assert "handler refused this event" in events[3]["error"]
    assert names == ["Event 0", "Event 1", "Event 2"]
