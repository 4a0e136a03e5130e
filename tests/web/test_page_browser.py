"""The Integrations page in headless Chromium against the real API server (issue 14): the live lane apart from
backfills, times in UTC with "ago", history paged and filtered with links to Airflow, a progress bar that
follows the work, dialogs that mark required fields and show the server's message on the field without
echoing secrets, health at a glance, 1,000 connections, and axe-core finding no serious violation.

Screenshots of the main views land in artifacts/, or in docs/img/ (the README shows them) when run with
HISSUNO_SCREENSHOTS=docs/img.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from hissuno_airflow.store import connections as repo
from tests.fixtures.web import ADMIN_TOKEN, Web
from tests.web.page_data import add_run, fresh_now, many_connections, set_stream_state
from tests.web.test_browser import ARGS, CHROMIUM

# The README's screenshots are refreshed on purpose (HISSUNO_SCREENSHOTS=docs/img); a plain test run
# writes them under artifacts/ and leaves the tracked images alone.
IMG = Path(os.environ.get("HISSUNO_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "artifacts")
IMG.mkdir(parents=True, exist_ok=True)
AXE = importlib.resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()
UTC_AGO = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC \((\d+ (s|min|h|d) ago|in \d+ (s|min|h|d))\)")


def axe_violations(page: Any) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now (the whole document)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])}x: "
            + "; ".join(sorted({n['html'][:90] + ' ' + n.get('failureSummary', '')[-90:] for n in v['nodes']})) + ")"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def _airflow_server(store: Any, page_mode: Any) -> Any:
    from hissuno_airflow.web.app import create_app
    from hissuno_airflow.web.serve import Server
    from tests.fixtures.web import register_test_plugins

    register_test_plugins()
    page_mode("airflow")  # the page as Airflow's API server serves it: runs link to Airflow
    return Server(create_app(authenticate=lambda req: "tester", store=store, url_prefix="/hissuno",
                             airflow_base="/airflow")).start()


def test_streams_history_and_health_as_airflow_serves_the_page(store: Any, page_mode: Any) -> None:
    NOW = fresh_now()
    import httpx
    from playwright.sync_api import expect, sync_playwright

    server = _airflow_server(store, page_mode)
    try:
        api = httpx.Client(base_url=server.url, timeout=30)
        gone = api.post("/api/plugins/sample/connect", json={"credentials": {"workspace": "initech"}}).json()["connection_id"]
        repo.set_auth_error(store, gone, "sample: the provider answered 401 for Bearer sk_live_abcdefghijkl")
        bad = api.post("/api/plugins/sample/connect", json={"credentials": {"workspace": "globex"}}).json()["connection_id"]
        api.post(f"/api/plugins/sample/{bad}/streams", json={"stream_key": "issues", "enabled": True})
        add_run(store, bad, "issues", status="error", started=NOW - timedelta(minutes=10),
                error="sample: rate limit budget spent (retry after 1800s)")
        set_stream_state(store, bad, "issues", status="error", error="sample: rate limit budget spent")
        # Connected last, so it is listed first (newest first) and fills the screenshot.
        cid = api.post("/api/plugins/sample/connect", json={"credentials": {"workspace": "acme"}}).json()["connection_id"]
        api.post(f"/api/plugins/sample/{cid}/streams", json={"stream_key": "sessions", "enabled": True, "frequency": "6h"})
        dag = f"hissuno__{cid}__sessions"
        for i in range(12):
            add_run(store, cid, "sessions", started=NOW - timedelta(hours=6 * (i + 1)), seconds=95, synced=20 + i,
                    external=f"{dag}/scheduled__run{i}/1")
        add_run(store, cid, "sessions", started=NOW - timedelta(minutes=3), seconds=125, synced=1733,
                external=f"{dag}/scheduled__latest/1")
        add_run(store, cid, "sessions", triggered_by="backfill", status="in_progress", started=NOW - timedelta(minutes=1),
                window=(NOW - timedelta(days=30), NOW - timedelta(days=29)), external=f"{dag}/backfill__w1/1")
        set_stream_state(store, cid, "sessions", status="success", next_at=NOW + timedelta(hours=5, minutes=57))

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{server.url}/")
                stream = page.locator(f'[data-connection="{cid}"] .stream[data-stream="sessions"]')
                live = stream.locator(".s-live")
                # The live lane: the scheduled run 3 minutes ago, in UTC as Airflow shows it, its duration
                # and counts; the running backfill is shown apart and does not replace it.
                expect(live).to_contain_text("Last scheduled run success")
                expect(live).to_contain_text("(3 min ago)")
                expect(live).to_contain_text("took 2 min 5 s")
                expect(live).to_contain_text("1733 synced")
                assert UTC_AGO.search(live.inner_text()), live.inner_text()
                started = (NOW - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%S UTC")
                expect(live).to_contain_text(started)
                expect(stream.locator(".s-next")).to_contain_text("Next run " + (NOW + timedelta(hours=5, minutes=57))
                                                                  .strftime("%Y-%m-%d %H:%M:%S UTC"))
                expect(stream.locator(".s-next")).to_contain_text("(in 6 h)")
                expect(stream.locator(".s-backfill")).to_contain_text("Backfill")
                expect(stream.locator(".s-backfill")).to_contain_text("running")
                # Health at a glance, the last error redacted.
                expect(page.locator(f'[data-connection="{bad}"] [data-health]')).to_contain_text("Rate-limited until")
                until = NOW - timedelta(minutes=10) + timedelta(seconds=42 + 1800)  # the run's end + the wait
                expect(page.locator(f'[data-connection="{bad}"] [data-health]')).to_contain_text(
                    re.compile(re.escape(until.strftime("%Y-%m-%d %H:%M:%S UTC")) + r" \(in \d+ min\)"))
                refused = page.locator(f'[data-connection="{gone}"] [data-health]')
                expect(refused).to_contain_text("Reconnect needed")
                expect(refused).to_contain_text("401")
                assert "sk_live_abcdefghijkl" not in page.content()
                expect(page.locator(f'[data-connection="{cid}"] [data-health]')).to_contain_text("Healthy")
                page.screenshot(path=str(IMG / "integrations-page.png"), full_page=False)
                page.locator(f'[data-connection="{bad}"] > .head').screenshot(
                    path=str(IMG / "integrations-health-rate-limited.png"))
                page.locator(f'[data-connection="{gone}"] > .head').screenshot(
                    path=str(IMG / "integrations-health-reconnect.png"))

                # History: 14 runs, paged by 10, filtered by lane and status, each linking to Airflow. It opens on
                # every lane but backfills (13 runs), so a long backfill does not push the live runs out.
                stream.locator(".s-history-toggle").click()
                rows = stream.locator(".s-history tbody tr")
                expect(rows).to_have_count(10)
                expect(stream.locator(".s-page-info")).to_have_text("1–10 of 13")
                expect(rows.first.locator("td").nth(1)).to_have_text("scheduled")
                stream.get_by_label("Lane").select_option("")
                expect(stream.locator(".s-page-info")).to_have_text("1–10 of 14")
                first = rows.first
                expect(first.locator("td").nth(1)).to_have_text("backfill")
                link = rows.nth(1).get_by_role("link", name="Log")
                expect(link).to_have_attribute("href", f"/airflow/dags/{dag}/runs/scheduled__latest/tasks/sync?try_number=1")
                expect(rows.nth(1).get_by_role("link", name="Run")).to_have_attribute(
                    "href", f"/airflow/dags/{dag}/runs/scheduled__latest")
                stream.get_by_role("button", name="Older").click()
                expect(stream.locator(".s-page-info")).to_have_text("11–14 of 14")
                expect(rows).to_have_count(4)
                stream.get_by_label("Lane").select_option("backfill")
                expect(rows).to_have_count(1)
                expect(stream.locator(".s-page-info")).to_have_text("1–1 of 1")
                stream.get_by_label("Lane").select_option("scheduled")
                stream.get_by_label("Status").select_option("error")
                expect(rows).to_have_count(1)
                expect(rows.first).to_contain_text("No runs match")
                stream.get_by_label("Status").select_option("")
                expect(stream.locator(".s-page-info")).to_have_text("1–10 of 13")
                stream.scroll_into_view_if_needed()
                stream.screenshot(path=str(IMG / "integrations-history.png"))
                assert axe_violations(page) == []
                assert not errors, errors
            finally:
                browser.close()
    finally:
        server.stop()


def conn_id_of(store: Any, external_account_id: str) -> str:
    return next(c.id for c in repo.list_connections(store) if c.external_account_id == external_account_id)


def test_dialogs_progress_and_accessibility(web: Web, store: Any, monkeypatch: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.web.plugins import FakeKeyProvider

    secret = "key-" + "s3cr3t" * 3
    fake = FakeKeyProvider()
    fake.add_account(secret, "acct-1", "Account One")
    fake.__enter__()
    monkeypatch.setenv("HISSUNO_WEBKEY_API_URL", fake.url)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")
            assert axe_violations(page) == []
            # Required fields are marked; a missing one is named on the field, not by a browser bubble.
            page.locator('.card[data-plugin="webkey"]').get_by_role("button").click()
            dialog = page.locator("#config-dialog")
            expect(dialog.locator('[data-field="api_key"] label')).to_contain_text("API key *")
            expect(dialog.locator("#cfg-api_key")).to_have_attribute("aria-required", "true")
            expect(dialog.get_by_role("textbox", name="API key (required)")).to_be_visible()
            dialog.get_by_role("button", name="Connect").click()
            expect(dialog.locator("#cfg-api_key-error")).to_have_text("API key is required.")
            expect(dialog.locator("#cfg-api_key")).to_have_attribute("aria-invalid", "true")
            assert axe_violations(page) == []
            dialog.get_by_role("button", name="Cancel").click()

            # The server's message lands on the field it names (the browser's own check is off).
            page.locator('.card[data-plugin="sample"]').get_by_role("button").click()
            dialog.get_by_label("New record every (seconds)").fill("every hour")
            dialog.get_by_role("button", name="Connect").click()
            msg = dialog.locator("#cfg-every_seconds-error")
            expect(msg).to_have_text("New record every (seconds) has an unexpected format")
            assert "requested format" not in msg.inner_text()
            assert dialog.get_by_label("New record every (seconds)").evaluate("e => e.validationMessage") == ""
            expect(page.locator("#config-error")).to_be_hidden()
            page.screenshot(path=str(IMG / "integrations-connect-dialog.png"))
            dialog.get_by_label("New record every (seconds)").fill("60")
            dialog.get_by_role("button", name="Connect").click()
            expect(dialog).to_be_hidden()
            cid = repo.list_connections(store, plugin_id="sample")[0].id

            # A secret is never echoed back: reconnecting starts from empty fields, and no answer carries it.
            assert web.client.post("/api/plugins/webkey/connect", json={"credentials": {"api_key": secret}}).is_success
            page.reload()
            conn = page.locator('.connection:has-text("Account One")').first
            conn.get_by_role("button", name="Reconnect").click()
            expect(dialog.locator("#config-title")).to_have_text("Reconnect Web Key")
            assert dialog.locator("#cfg-api_key").input_value() == ""
            assert secret not in page.content()
            dialog.get_by_role("button", name="Cancel").click()

            # Connection settings: the name is edited there (required, the server's message on the field),
            # the rest says what the connection is; no secret appears.
            conn.get_by_role("button", name="Settings of Account One").click()
            settings_dlg = page.locator("#conn-dialog")
            expect(settings_dlg.locator("#conn-details")).to_contain_text("acct-1")
            expect(settings_dlg.locator("#conn-details")).to_contain_text("Credentials stored in")
            assert secret not in settings_dlg.inner_html()
            name = settings_dlg.get_by_role("textbox", name="Name (required)")
            name.fill("  ")
            settings_dlg.get_by_role("button", name="Save").click()
            expect(settings_dlg.locator("#conn-label-error")).to_have_text("Name is required.")
            name.fill("x" * 5000)
            settings_dlg.get_by_role("button", name="Save").click()
            expect(settings_dlg.locator("#conn-label-error")).to_contain_text("Name: expected")
            expect(name).to_have_attribute("aria-invalid", "true")
            assert axe_violations(page) == []
            name.fill("Support desk (EU)")
            settings_dlg.get_by_role("button", name="Save").click()
            expect(settings_dlg).to_be_hidden()
            expect(page.locator('.connection:has-text("Support desk (EU)")')).to_have_count(1)
            assert repo.get_connection(store, conn_id_of(store, "acct-1")).account_label == "Support desk (EU)"

            # The progress bar follows the records handled, never jumping from a stuck start to the end.
            stream = page.locator(f'[data-connection="{cid}"] .stream[data-stream="sessions"]')
            stream.locator(".s-enabled").check()
            stream.locator('[data-path="filters.size"]').fill("300")
            stream.locator(".s-save").click()
            expect(stream.locator(".s-live")).to_contain_text("Enabled")
            page.evaluate("""() => { window.samples = [];
                const bar = document.querySelector('[data-connection] .stream[data-stream="sessions"] .progress');
                new MutationObserver(() => window.samples.push([bar.querySelector('.bar').getAttribute('aria-valuenow'),
                    bar.querySelector('.progress-text').textContent]))
                  .observe(bar, {subtree: true, attributes: true, childList: true, characterData: true}); }""")
            stream.locator(".s-sync").click()
            expect(stream.locator(".progress")).to_have_attribute("data-state", "complete", timeout=120_000)
            samples: list[tuple[str, str]] = page.evaluate("window.samples")
            middle = []
            for value, text in samples:
                m = re.match(r"(\d+) of (\d+) handled", text)
                if m and 0 < int(m.group(1)) < int(m.group(2)):
                    middle.append((int(value), 100 * int(m.group(1)) / int(m.group(2))))
            assert len(middle) >= 3, samples[:20]
            assert all(abs(v - expect_pct) <= 1 for v, expect_pct in middle), middle[:20]
            values = [int(v) for v, _ in samples if v is not None]
            assert values == sorted(values)  # never backwards
            expect(stream.locator(".s-live")).to_contain_text("Last manual run success")
            assert not errors, errors
        finally:
            browser.close()
            fake.__exit__(None, None, None)


def test_a_thousand_connections_load_in_under_a_second(web: Web, store: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    many_connections(store, 1000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")  # warm: cookie, pool, static files
            expect(page.locator(".connection").first).to_be_visible()
            started = time.monotonic()
            page.reload()
            expect(page.locator("#conn-page-info")).to_have_text("1–25 of 1000 connections")
            took = time.monotonic() - started
            assert took < 1.0, f"the page took {took:.2f} s with 1,000 connections"
            expect(page.locator(".connection")).to_have_count(25)
            expect(page.locator('.card[data-plugin="sample"]')).to_contain_text("1000 connected")  # all, not the page
            page.get_by_role("button", name="Next").click()
            expect(page.locator("#conn-page-info")).to_have_text("26–50 of 1000 connections")
            page.get_by_label("Find a connection").fill("Bulk workspace 777")
            page.get_by_role("button", name="Search").click()
            expect(page.locator(".connection")).to_have_count(1)
            expect(page.locator("#conn-page-info")).to_have_text("1–1 of 1 connections")
        finally:
            browser.close()
