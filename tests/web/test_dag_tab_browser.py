"""The "Hissuno" tab on a stream's DAG page, in headless Chromium against the real Airflow API server (issue 14).

The API server of tests/web/test_airflow_api_server.py serves Airflow's own UI; the stream's DAG is written
to its database by ``airflow dags reserialize`` over the repo's DAG file. The browser signs in on Airflow's
login page, opens the DAG, clicks the "Hissuno" tab and reads the frame Airflow embeds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from hissuno_airflow.dag_factory import dag_id_for
from tests.web.test_airflow_api_server import (  # noqa: F401  (module-scoped fixtures reused)
    AIRFLOW,
    REPO,
    ApiServer,
    api_server,
    auth_fake,
    key_fake,
)
from tests.web.test_browser import ARGS, CHROMIUM


def _reserialize(api: ApiServer, database_url: str) -> None:
    """Write the Hissuno DAGs into the API server's Airflow database, as the dag-processor would."""
    dags = api.home / "dags"
    dags.mkdir(exist_ok=True)
    shutil.copy(REPO / "dags" / "hissuno_dags.py", dags / "hissuno_dags.py")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(api.home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{api.home}/airflow.db",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HISSUNO_DATABASE_URL": database_url, "HISSUNO_CREDENTIALS_BACKEND": "airflow",
        "HISSUNO_LOAD_PLUGINS": "sample",
    }
    done = subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


def test_the_hissuno_tab_on_a_dag_page_in_airflows_ui(
    api_server: ApiServer, store: Any, database_url: str  # noqa: F811
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with api_server.client() as c:
        r = c.post("/hissuno/api/plugins/sample/connect", json={"credentials": {"workspace": "tabbed"}})
        assert r.status_code == 201, r.text
        cid = r.json()["connection_id"]
        r = c.post(f"/hissuno/api/plugins/sample/{cid}/streams",
                   json={"stream_key": "sessions", "enabled": True, "frequency": "6h"})
        assert r.status_code in (200, 201), r.text
    cursor = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    with store.connection() as c:
        c.execute("UPDATE integration_streams SET last_sync_at = %s, last_sync_status = 'success',"
                  " last_sync_counts = %s WHERE connection_id = %s",
                  (cursor, Jsonb({"found": 1200, "synced": 1190, "skipped": 9, "failed": 1}), cid))
        c.execute("INSERT INTO ingest_errors (connection_id, stream_id, kind, external_id, reason, record, redacted)"
                  " VALUES (%s, 'sessions', 'session', 's-77', 'started_at: not a date', %s, true)",
                  (cid, Jsonb({"id": "s-77"})))
    dag_id = dag_id_for(cid, "sessions")
    _reserialize(api_server, database_url)
    password = json.loads((api_server.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # Sign in as Airflow's UI user on Airflow's own login page.
            page.goto(f"{api_server.url}/auth/login")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            # Integrations is its own top-level entry of Airflow's navigation.
            expect(page.get_by_role("link", name="Integrations").first).to_be_visible(timeout=20_000)

            page.goto(f"{api_server.url}/dags/{dag_id}")
            tab = page.get_by_role("link", name="Hissuno", exact=True)
            expect(tab).to_be_visible(timeout=20_000)
            tab.click()
            assert page.url.endswith(f"/dags/{dag_id}/plugin/hissuno-stream"), page.url
            frame_el = page.locator(f'iframe[src*="/hissuno/dag/{dag_id}"]')
            expect(frame_el).to_be_attached()
            tabframe = frame_el.content_frame
            expect(tabframe.locator("h1")).to_have_text("Sample data · Sample workspace tabbed · Conversations")
            def cell(label: str) -> Any:
                return tabframe.get_by_role("row").filter(has=tabframe.get_by_role("rowheader", name=label,
                                                                                  exact=True)).locator("td")

            expect(cell("Hissuno connection")).to_have_text(cid)
            expect(cell("Health")).to_have_text("connected")
            expect(cell("State")).to_have_text("enabled, last run succeeded")
            expect(cell("Cursor")).to_have_text("changes after 2026-03-01 12:30:00 UTC are synced next")
            expect(cell("Last counts")).to_have_text("1,200 found, 1,190 synced, 9 skipped, 1 failed")
            expect(tabframe.get_by_role("heading", name="Ingest errors (1 open)")).to_be_visible()
            expect(tabframe.get_by_role("row", name="session s-77 started_at: not a date")).to_be_visible()
            back = tabframe.get_by_role("link", name="Manage it on the Integrations page")
            expect(back).to_have_attribute("href", f"/hissuno/#connection-{cid}")
            expect(back).to_have_attribute("target", "_top")
            # The link leaves Airflow's frame for the Integrations page itself.
            back.click()
            page.wait_for_url(f"{api_server.url}/hissuno/#connection-{cid}", timeout=20_000)
        finally:
            browser.close()
