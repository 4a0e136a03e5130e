"""Headless Chromium drives the marketplace page: connect ``sample``, enable a stream, sync now, watch the bar.

Uses the system Chromium (``.ci/setup-browser.sh`` installs it); nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hissuno_airflow import registry
from hissuno_airflow.store import connections as repo
from tests.fixtures.web import ADMIN_TOKEN, Web, count

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def test_connect_enable_sync_in_the_browser(web: Web, store: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")
            card = page.locator('.card[data-plugin="sample"]')
            expect(card).to_be_visible()
            expect(card.locator("a.docs")).to_have_attribute("href", registry.get_plugin("sample").docs_url or "")
            # A bad value is refused in the dialog with the plugin's message.
            card.get_by_role("button", name="Add sample workspace").click()
            dialog = page.locator("#config-dialog")
            expect(dialog).to_be_visible()
            dialog.locator('input[name="workspace"]').fill("bad workspace!")
            dialog.get_by_role("button", name="Connect").click()
            # The server's message lands on the field it names.
            expect(dialog.locator("#cfg-workspace-error")).to_contain_text("expected letters, digits or")
            assert count(store, "integration_connections") == 0
            dialog.locator('input[name="workspace"]').fill("acme")
            dialog.get_by_role("button", name="Connect").click()
            expect(dialog).to_be_hidden()
            conn = page.locator(".connection").first
            expect(conn).to_contain_text("Sample workspace acme")
            assert count(store, "integration_connections") == 1

            stream = conn.locator('.stream[data-stream="sessions"]')
            stream.locator(".s-enabled").check()
            stream.locator('[data-path="filters.size"]').fill("40")
            stream.locator(".s-frequency").select_option("6h")
            stream.locator(".s-save").click()
            expect(stream.locator(".s-status")).to_contain_text("Enabled")
            cid = repo.list_connections(store)[0].id
            row = repo.get_stream(store, cid, "sessions")
            assert row.enabled and row.frequency == "6h" and row.filter_config["size"] == 40

            # A value the filters model refuses is named in the form.
            stream.locator('[data-path="filters.size"]').fill("0")
            stream.locator(".s-save").click()
            expect(stream.locator(".s-error")).to_contain_text("filters.size")
            stream.locator('[data-path="filters.size"]').fill("40")
            stream.locator(".s-save").click()

            stream.locator(".s-sync").click()
            bar = stream.locator(".progress .bar")
            expect(stream.locator(".progress")).to_have_attribute("data-state", "complete", timeout=120_000)
            expect(bar).to_have_attribute("aria-valuenow", "100")
            expect(stream.locator(".progress-text")).to_contain_text("synced")
            expect(stream.locator(".s-status")).to_contain_text("success")
            # The stream's run history: this manual run, with its counts.
            stream.locator(".s-history-toggle").click()
            run = stream.locator(".s-history tbody tr").first
            expect(run).to_contain_text("manual")
            expect(run.locator("td").nth(2)).to_have_text("success")
            expect(run.locator("td").nth(4)).to_have_text("40")
            page.screenshot(path=str(ARTIFACTS / "marketplace-sync.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert count(store, "sessions") == 40


def test_failed_webhook_events_are_visible_and_retryable_in_the_page(web: Web, store: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.fixtures.web import sign, verification_secret
    from tests.web.test_webhooks import make_connection

    cid = make_connection(store, "wh-github", verification_secret("github"))
    path = f"/api/plugins/webhook/wh-github/{cid}"
    body = b'{"id": "bad-1", "title": "will fail", "fail": true}'
    assert web.anon.post(path, content=body, headers=sign("github", body, web.url + path, event_id="f-1")).status_code == 200
    web.client.post(f"/api/plugins/wh-github/{cid}/events/process", json={"stream_id": "events"})
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")
            panel = page.locator(f'[data-events="{cid}"]')
            expect(panel).to_contain_text("1 failed webhook event")
            expect(panel).to_contain_text("handler refused event bad-1")
            panel.get_by_role("button", name="Retry now").click()
            expect(panel).to_contain_text("attempt 2")
        finally:
            browser.close()


def test_a_plugin_script_replaces_the_generic_dialog(web: Web, store: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")
            page.locator('.card[data-plugin="webcustom"]').get_by_role("button").click()
            own = page.locator("#webcustom-ui")
            expect(own).to_contain_text("Own dialog of Web Custom")
            expect(page.locator("#config-dialog")).to_be_hidden()
            own.get_by_role("button", name="Use token").click()
            expect(page.locator(".connection").first).to_contain_text("Direct token")
            assert not errors, errors
        finally:
            browser.close()
    assert [c.plugin_id for c in repo.list_connections(store)] == ["webcustom"]


def test_a_plugin_page_replaces_the_generic_dialog(web: Web) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")
            page.locator('.card[data-plugin="webapp"]').get_by_role("button").click()
            expect(page.locator("h1")).to_have_text("Install the Web App")
            assert page.url == f"{web.url}/api/plugins/webapp/setup"
        finally:
            browser.close()


def test_connecting_a_connected_account_offers_to_update_it(web: Web, store: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    from hissuno_airflow.runtime.credentials import load_credentials

    first = web.client.post("/api/plugins/sample/connect", json={"credentials": {"workspace": "demo"}}).json()
    cid = first["connection_id"]
    creds = load_credentials(store, repo.get_connection(store, cid))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")
            # An empty workspace field means the demo workspace, which is connected: nothing is overwritten.
            page.locator('.card[data-plugin="sample"]').get_by_role("button").click()
            dialog = page.locator("#config-dialog")
            dialog.locator('input[name="every_seconds"]').fill("30")
            dialog.get_by_role("button", name="Connect").click()
            expect(page.locator("#config-error")).to_contain_text(f"Sample workspace demo is already connected ({cid})")
            assert load_credentials(store, repo.get_connection(store, cid)) == creds
            assert count(store, "integration_connections") == 1
            # Updating it is the explicit second step.
            dialog.get_by_role("button", name="Update Sample workspace demo").click()
            expect(dialog).to_be_hidden()
            expect(page.locator("#toast")).to_contain_text("Updated Sample workspace demo")
            assert load_credentials(store, repo.get_connection(store, cid))["every_seconds"] == 30
            # The return leg of a redirect flow that found the account connected offers the same.
            page.goto(f"{web.url}/?plugin=sample&error=account_exists&existing={cid}")
            toast = page.locator("#toast")
            expect(toast).to_contain_text(f"Sample workspace demo is already connected ({cid})")
            toast.get_by_role("button", name="Update Sample workspace demo").click()
            expect(dialog).to_be_visible()
            assert not errors, errors
        finally:
            browser.close()
    assert count(store, "integration_connections") == 1


def test_sync_now_of_a_stream_that_is_not_enabled_says_so_without_saving(store: Any, page_mode: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    from hissuno_airflow.web.app import create_app
    from hissuno_airflow.web.serve import Server
    from tests.fixtures.web import register_test_plugins

    register_test_plugins()
    # The page as Airflow serves it (DAG links shown); the API server's login is stood in for.
    page_mode("airflow")
    server = Server(create_app(authenticate=lambda req: "tester", store=store,
                               url_prefix="/hissuno", airflow_base="/airflow")).start()
    try:
        import httpx

        api = httpx.Client(base_url=server.url, timeout=30)
        cid = api.post("/api/plugins/sample/connect", json={"credentials": {"workspace": "w1"}}).json()["connection_id"]
        api.post(f"/api/plugins/sample/{cid}/streams", json={"stream_key": "issues", "enabled": False})
        api.post(f"/api/plugins/sample/{cid}/streams", json={"stream_key": "sessions", "enabled": True})
        before = repo.get_stream(store, cid, "issues")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{server.url}/")
                issues = page.locator('.stream[data-stream="issues"]')
                expect(issues.locator(".s-status")).to_contain_text("Disabled")
                expect(issues.locator(".s-dag")).to_be_hidden()  # no DAG for a disabled stream
                issues.locator(".s-sync").click()
                expect(issues.locator(".s-error")).to_contain_text("This stream is not enabled")
                expect(issues.locator(".progress")).to_be_hidden()
                contacts = page.locator('.stream[data-stream="contacts"]')  # never saved, not ticked
                contacts.locator(".s-sync").click()
                expect(contacts.locator(".s-error")).to_contain_text("This stream is not enabled")
                sessions = page.locator('.stream[data-stream="sessions"]')
                expect(sessions.locator(".s-dag")).to_be_visible()
                expect(sessions.locator(".s-dag")).to_have_attribute("href", f"/airflow/dags/hissuno__{cid}__sessions")
                assert not errors, errors
            finally:
                browser.close()
        assert repo.get_stream(store, cid, "issues") == before
        assert sorted(s.stream_id for s in repo.list_streams(store, cid)) == ["issues", "sessions"]
        assert count(store, "integration_sync_runs") == 0
    finally:
        server.stop()
