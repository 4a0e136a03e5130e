"""The API behind the Integrations page: lanes kept apart, run history paged and filtered with Airflow links,
connection health, and a thousand connections served a page at a time."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from hissuno_airflow.web.overview import run_links
from tests.fixtures.web import Web
from tests.web.page_data import add_run, fresh_now, many_connections, set_stream_state


def _connect(web: Web, workspace: str = "acme") -> str:
    cid = web.client.post("/api/plugins/sample/connect", json={"credentials": {"workspace": workspace}}).json()
    web.client.post(f"/api/plugins/sample/{cid['connection_id']}/streams",
                    json={"stream_key": "sessions", "enabled": True, "frequency": "6h"})
    return str(cid["connection_id"])


def _stream(web: Web, cid: str, sid: str = "sessions") -> dict[str, Any]:
    conns = web.client.get("/api/connections", params={"limit": 25}).json()["connections"]
    conn = next(c for c in conns if c["id"] == cid)
    return next(s for s in conn["streams"] if s["stream_id"] == sid)


def test_a_backfill_does_not_stand_for_the_live_lane(web: Web, store: Any) -> None:
    NOW = fresh_now()
    cid = _connect(web)
    add_run(store, cid, "sessions", started=NOW - timedelta(minutes=30), seconds=75, synced=12,
            external="hissuno__x__sessions/scheduled__2026-12-06T22:30:00+00:00/1")
    # A backfill started later and still running: the live lane still shows the scheduled run.
    add_run(store, cid, "sessions", triggered_by="backfill", status="in_progress", started=NOW - timedelta(minutes=5),
            window=(NOW - timedelta(days=30), NOW - timedelta(days=29)))
    s = _stream(web, cid)
    assert s["last_run"]["lane"] == "scheduled" and s["last_run"]["status"] == "success"
    assert s["last_run"]["duration_s"] == 75 and s["last_run"]["counts"]["synced"] == 12
    assert s["last_backfill"]["lane"] == "backfill" and s["last_backfill"]["status"] == "in_progress"
    # The streams route (what the page reloads after a save or a sync) carries the same lanes.
    rows = web.client.get(f"/api/plugins/sample/{cid}/streams").json()["streams"]
    assert rows[0]["last_run"]["lane"] == "scheduled" and rows[0]["last_backfill"]["lane"] == "backfill"


def test_run_history_is_paged_and_filtered_by_lane_and_status(web: Web, store: Any) -> None:
    NOW = fresh_now()
    cid = _connect(web)
    for i in range(13):
        add_run(store, cid, "sessions", started=NOW - timedelta(hours=i + 1), synced=i)
    add_run(store, cid, "sessions", triggered_by="manual", status="error", started=NOW - timedelta(minutes=3),
            error="sample: ProviderError after 3 attempts")
    add_run(store, cid, "sessions", triggered_by="webhook", started=NOW - timedelta(minutes=2))
    add_run(store, cid, "sessions", triggered_by="backfill", started=NOW - timedelta(minutes=1),
            window=(NOW - timedelta(days=2), NOW - timedelta(days=1)))
    path = f"/api/plugins/sample/{cid}/runs"
    first = web.client.get(path, params={"limit": 10}).json()
    assert first["total"] == 16 and len(first["runs"]) == 10
    assert [r["lane"] for r in first["runs"][:3]] == ["backfill", "webhook", "manual"]
    second = web.client.get(path, params={"limit": 10, "offset": 10}).json()
    assert len(second["runs"]) == 6 and {r["id"] for r in second["runs"]}.isdisjoint(r["id"] for r in first["runs"])
    scheduled = web.client.get(path, params={"lane": "scheduled", "limit": 50}).json()
    assert scheduled["total"] == 13 and {r["triggered_by"] for r in scheduled["runs"]} == {"cron"}
    live = web.client.get(path, params={"lane": "live", "limit": 50}).json()
    assert live["total"] == 15 and "backfill" not in {r["lane"] for r in live["runs"]}
    webhook = web.client.get(path, params={"lane": "webhook"}).json()
    assert webhook["total"] == 1 and [r["triggered_by"] for r in webhook["runs"]] == ["webhook"]
    failed = web.client.get(path, params={"status": "error"}).json()
    assert [r["lane"] for r in failed["runs"]] == ["manual"]
    bad = web.client.get(path, params={"lane": "nightly"})
    assert bad.status_code == 400 and bad.json()["field"] == "lane"
    assert web.client.get(path, params={"offset": "-1"}).json()["field"] == "offset"


def test_runs_link_to_their_airflow_run_and_task_log() -> None:
    run = {"external_run_id": "hissuno__c1__sessions/manual__2026-12-06T23:00:00+00:00/2"}
    links = run_links(run, "/airflow")
    assert links == {
        "run": "/airflow/dags/hissuno__c1__sessions/runs/manual__2026-12-06T23%3A00%3A00%2B00%3A00",
        "log": "/airflow/dags/hissuno__c1__sessions/runs/manual__2026-12-06T23%3A00%3A00%2B00%3A00/tasks/sync"
               "?try_number=2"}
    assert run_links(run, None) is None  # not served by Airflow: no links
    assert run_links({"external_run_id": None}, "/airflow") is None  # a run Airflow did not execute


def test_connection_health_at_a_glance(web: Web, store: Any) -> None:
    NOW = fresh_now()
    from hissuno_airflow.store import connections as repo

    ok, failing, limited, refused = (_connect(web, w) for w in ("ok", "failing", "limited", "refused"))
    add_run(store, ok, "sessions", started=NOW - timedelta(minutes=3))
    set_stream_state(store, ok, "sessions", status="success")
    add_run(store, failing, "sessions", status="error", started=NOW - timedelta(minutes=3),
            error="sample: server answered 500 with Bearer abcdefghijklmnop")
    set_stream_state(store, failing, "sessions", status="error",
                     error="sample: server answered 500 with Bearer abcdefghijklmnop")
    add_run(store, limited, "sessions", status="error", started=NOW - timedelta(minutes=1), seconds=10,
            error="sample: rate limit budget spent (retry after 900s)")
    set_stream_state(store, limited, "sessions", status="error", error="sample: rate limit budget spent")
    repo.set_auth_error(store, refused, "sample: the provider answered 401")
    conns = {c["id"]: c for c in web.client.get("/api/connections", params={"limit": 25}).json()["connections"]}
    assert conns[ok]["health"]["state"] == "ok"
    h = conns[failing]["health"]
    assert h["state"] == "failing" and h["failing_streams"] == ["sessions"]
    assert "abcdefghijklmnop" not in h["last_error"] and "500" in h["last_error"]
    h = conns[limited]["health"]
    assert h["state"] == "rate_limited"
    expected = NOW - timedelta(minutes=1) + timedelta(seconds=10 + 900)
    assert h["rate_limited_until"].startswith(expected.isoformat()[:19])
    h = conns[refused]["health"]
    assert h["state"] == "reconnect_needed" and "401" in h["last_error"]


def test_a_thousand_connections_come_a_page_at_a_time_quickly(web: Web, store: Any) -> None:
    many_connections(store, 1000)
    first = web.client.get("/api/connections", params={"limit": 25}).json()  # also warms the pool
    assert len(first["connections"]) == 25 and first["connections"][0]["id"] == "sample_bulk1"
    started = time.monotonic()
    page = web.client.get("/api/connections", params={"limit": 25, "offset": 975}).json()
    took = time.monotonic() - started
    assert page["total"] == 1000 and len(page["connections"]) == 25
    assert took < 0.5, f"a page of 25 of 1,000 connections took {took:.2f} s"
    assert all(c["streams"][0]["last_run"]["lane"] == "scheduled" for c in page["connections"])
    found = web.client.get("/api/connections", params={"limit": 25, "q": "workspace 777"}).json()
    assert found["total"] == 1 and found["connections"][0]["id"] == "sample_bulk777"
    assert web.client.get("/api/connections", params={"limit": 500}).json()["field"] == "limit"
    assert found["per_plugin"] == {"sample": 1000}  # the catalog's count is of all, not of the page


def test_connection_settings_say_where_credentials_live_and_which_webhook_url_to_use(web: Web, store: Any) -> None:
    cid = _connect(web, "settings")
    conn = web.client.get(f"/api/plugins/sample/{cid}").json()
    assert conn["stored_in"] in ("db", "airflow") and "credentials" not in conn
    plugins = {p["id"]: p for p in web.client.get("/api/plugins/catalog").json()["plugins"]}
    # GitHub and Linear deliver every account's events to the app's one URL; Zendesk and Jira to one per connection.
    assert (plugins["github"]["webhook_scope"], plugins["linear"]["webhook_scope"]) == ("app", "app")
    assert (plugins["zendesk"]["webhook_scope"], plugins["jira"]["webhook_scope"]) == ("connection", "connection")
    assert plugins["posthog"]["webhook_scope"] is None
    renamed = web.client.patch(f"/api/plugins/sample/{cid}", json={"account_label": "EU desk"})
    assert renamed.json()["account_label"] == "EU desk"
    bad = web.client.patch(f"/api/plugins/sample/{cid}", json={"account_label": "x" * 5000})
    assert bad.status_code == 400 and bad.json()["field"] == "account_label"
