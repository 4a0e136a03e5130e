"""The Integrations page's search box in headless Chromium against the real API server: a paraphrase
finds its record, the result shows kind, title (a link when the record has one), source plugin,
connection and external id, score and the matching words marked."""

from __future__ import annotations

from typing import Any

from tests.fixtures.web import ADMIN_TOKEN, Web
from tests.web.test_browser import ARGS, CHROMIUM
from tests.web.test_page_browser import axe_violations
from tests.web.test_search_api import corpus  # noqa: F401  (fixture)


def test_the_search_box_shows_readable_results(web: Web, corpus: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{web.url}/?token={ADMIN_TOKEN}")
            page.get_by_role("searchbox", name="Search records").fill("INC-4821")
            page.get_by_role("button", name="Find records").click()
            hit = page.locator("#search-results .search-hit").first
            expect(hit).to_contain_text("Webhook deliveries duplicated")
            expect(hit.locator(".badge")).to_have_text("issue")
            expect(hit.locator(".search-source")).to_have_text("sample · Sample workspace search-ws · INC-4821")
            expect(hit.locator(".search-head")).to_contain_text("score 0.")
            expect(hit.locator("mark")).to_have_text("INC-4821")
            page.locator("#search-q").fill("retry backoff")
            page.get_by_role("combobox", name="Kind").select_option("knowledge")
            page.get_by_role("button", name="Find records").click()
            link = page.locator("#search-results .search-hit").first.get_by_role("link", name="How webhook retries work")
            expect(link).to_have_attribute("href", "https://docs.example.com/webhooks/retries")
            page.get_by_role("combobox", name="Kind").select_option("")
            page.locator("#search-q").fill("customer cannot log in after single sign-on")
            page.get_by_role("button", name="Find records").click()
            expect(page.locator("#search-results .search-hit").first).to_contain_text("Stuck after SSO")
            assert axe_violations(page) == []
        finally:
            browser.close()
