"""The "Hissuno" tab on each DAG's page and the Integrations entry at the top of Airflow's navigation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from psycopg.types.json import Jsonb

from hissuno_airflow.airflow_host import asgi
from hissuno_airflow.dag_factory import dag_id_for

from .conftest import enable, make_connection


def _get(path: str, *, signed_in: bool, monkeypatch: Any) -> httpx.Response:
    """GET through the plugin's ASGI app, mounted at /hissuno as the API server mounts it."""
    async def user(scope: dict[str, Any]) -> str | None:
        # The token check itself is Airflow's (tests/web/test_airflow_api_server.py runs it for real).
        return "admin" if signed_in else None

    monkeypatch.setattr(asgi, "_user_from_scope", user)
    app = asgi.HissunoASGI()

    async def mounted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app({**scope, "root_path": "/hissuno"}, receive, send)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=mounted)
        async with httpx.AsyncClient(transport=transport, base_url="http://airflow") as client:
            return await client.get(path)

    return asyncio.run(go())


def test_the_dag_tab_shows_connection_stream_state_cursor_counts_and_errors(store, probe, airflow_db, monkeypatch):
    conn = make_connection(store, "afprobe")
    enable(store, conn, "people", "6h")
    cursor = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    with store.connection() as c:
        c.execute("UPDATE integration_streams SET last_sync_at = %s, last_sync_status = 'success',"
                  " last_sync_counts = %s WHERE connection_id = %s",
                  (cursor, Jsonb({"found": 1200, "synced": 1190, "skipped": 9, "failed": 1}), conn.id))
        c.execute("INSERT INTO ingest_errors (connection_id, stream_id, kind, external_id, reason, record, redacted)"
                  " VALUES (%s, 'people', 'contact', 'p-<7>', 'email: not an email', %s, true)",
                  (conn.id, Jsonb({"id": "p-<7>"})))
    dag_id = dag_id_for(conn.id, "people")

    r = _get(f"/hissuno/dag/{dag_id}", signed_in=True, monkeypatch=monkeypatch)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "Airflow Probe · afprobe acct-1 · People" in page
    assert f"Hissuno connection</th><td>{conn.id}" in page and "connected" in page
    assert "enabled, <span class=ok>last run succeeded</span>" in page
    assert "changes after 2026-03-01 12:30:00 UTC are synced next" in page
    assert "1,200 found, 1,190 synced, 9 skipped, 1 failed" in page
    assert "Ingest errors (1 open)" in page and "p-&lt;7&gt;" in page and "p-<7>" not in page  # escaped
    assert f"href='/hissuno/#connection-{conn.id}' target=_top" in page
    assert "every 6 hours, at " in page

    assert _get(f"/hissuno/dag/{dag_id}", signed_in=False, monkeypatch=monkeypatch).status_code == 401
    other = _get("/hissuno/dag/some_other_dag", signed_in=True, monkeypatch=monkeypatch)
    assert other.status_code == 404 and "Not a Hissuno stream" in other.text


def test_plugin_puts_integrations_at_the_top_of_the_nav_and_a_tab_on_each_dag():
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    from hissuno_airflow.airflow_plugin import HissunoPlugin

    views = {v["destination"]: ExternalViewResponse.model_validate(v).model_dump() for v in HissunoPlugin.external_views}
    nav = views["nav"]
    assert nav["name"] == "Integrations" and nav["href"] == "/hissuno/"
    assert nav["nav_top_level"] is True and not nav.get("category")  # not an item of Browse
    tab = views["dag"]
    # Airflow's UI shows a DAG tab only with a url_route, and replaces {DAG_ID} in the href.
    assert tab["url_route"] and tab["href"] == "/hissuno/dag/{DAG_ID}"
