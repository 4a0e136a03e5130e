"""The worked example of ``docs/writing-a-plugin.md``, end to end: the code the guide shows is the code tested here.

``docs/examples/ticketdesk`` (``plugin.py``, ``client.py``) is imported from the docs folder and registered
for each test, never as a built-in. ``HISSUNO_TICKETDESK_API_URL`` points it at the stateful fake of
``tests/fakes/ticketdesk.py`` on 127.0.0.1, which pages tickets, demands the bearer token and fails on
request (429 + Retry-After, 503, 401). Runs go through ``run_stream_sync`` into the real store; webhooks
through the real intake and inbox. The kit's conformance checks run over the example too, and
``test_guide_shows_the_example_files_as_they_are`` keeps the guide's code blocks equal to the files.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hissuno_airflow import registry, settings
from hissuno_airflow.kit import ProviderAuthError, WebhookSignatureError
from hissuno_airflow.kit import testing as conformance
from hissuno_airflow.runtime.connect import connect_api_key
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.runtime.webhooks import IntakeRequest, receive_webhook
from hissuno_airflow.runtime.webhooks.inbox import process_inbox
from hissuno_airflow.store import connections as repo
from tests.fakes import ticketdesk as fakes
from tests.fakes.server import FakeClock
from tests.fakes.ticketdesk import TicketDesk
from tests.fakes.webhooks import Signer
from tests.fixtures.fakes import retries_on

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
PAGE_SIZE = 5
TOKEN = "tdk_live_7f3a9c21e5b84d06a1c2"
RETRY_AFTER = 7


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``docs/examples/ticketdesk/plugin.py``, importable as ``ticketdesk.plugin`` and registered."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    # Subprocesses (the light-import check) find it too.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(EXAMPLES), os.environ.get("PYTHONPATH")))))
    module = importlib.import_module("ticketdesk.plugin")
    assert module.__file__ == str(EXAMPLES / "ticketdesk" / "plugin.py")
    registry.register(module.plugin)
    try:
        yield module
    finally:
        registry.unregister("ticketdesk")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake's clock, starting at ``T0``; every HTTP client's retries wait on it instead of sleeping."""
    clock = FakeClock(T0.timestamp())
    retries_on(monkeypatch, clock)
    return clock


@pytest.fixture
def desk(store: Any, serve_fake: Any, clock: FakeClock, example: ModuleType, monkeypatch: pytest.MonkeyPatch,
         ) -> tuple[TicketDesk, str]:
    """The fake desk with 23 tickets, the plugin pointed at it, and a connection with ``tickets`` enabled."""
    fake = serve_fake(TicketDesk(23, clock=clock.time))
    fake.issue_token(TOKEN)
    monkeypatch.setenv("HISSUNO_TICKETDESK_API_URL", fake.url)
    # Per-request debug lines too, so the token check covers every line the HTTP layer can write.
    monkeypatch.setenv("HISSUNO_DEBUG_INTEGRATIONS", "1")
    out = connect_api_key(registry.get_plugin("ticketdesk"), store, project_id=settings.default_project_id(),
                          user_id="tester", credentials={"api_token": TOKEN})
    enable_stream(store, out["connection_id"], "tickets")
    return fake, out["connection_id"]


def _one(store: Any, sql: str, *args: Any) -> Any:
    with store.connection() as c:
        row = c.execute(sql, args).fetchone()
    return next(iter(row.values()))


# -- sync ------------------------------------------------------------------------------------------


def test_sync_pages_retries_and_ingests_every_ticket_once(store: Any, desk: tuple[TicketDesk, str],
                                                          clock: FakeClock, caplog: Any) -> None:
    fake, cid = desk
    assert fake.count("/api/me") == 1 and fake.requests_to("/api/me")[0].bearer_token == TOKEN
    limited = fake.inject_429("/api/tickets", retry_after=RETRY_AFTER,
                              when=lambda r: r.query.get("cursor") == str(PAGE_SIZE))
    unavailable = fake.inject_5xx("/api/tickets", when=lambda r: r.query.get("cursor") == str(3 * PAGE_SIZE))
    events: list[str] = []
    caplog.set_level(logging.DEBUG)

    result = run_stream_sync(cid, "tickets", store=store,
                             on_progress=lambda e, counts: events.append(e.model_dump_json()))

    assert result.status == "success", result.error
    assert result.counts["synced"] == 23 and result.counts["failed"] == 0
    assert _one(store, "SELECT count(*) FROM issues") == 23
    assert _one(store, "SELECT count(DISTINCT external_id) FROM integration_synced_records"
                       " WHERE connection_id = %s", cid) == 23
    assert result.cursor_after == T0 + timedelta(minutes=22)
    assert repo.get_stream(store, cid, "tickets").last_sync_at == result.cursor_after

    # Five pages, page 2 asked twice (429 then 200) and page 4 twice (503 then 200); every one signed.
    ticket_requests = fake.requests_to("/api/tickets")
    assert len(ticket_requests) == 7 and limited.hits == 1 and unavailable.hits == 1
    assert all(r.bearer_token == TOKEN for r in ticket_requests)
    page2 = fake.ticket_requests(str(PAGE_SIZE))
    assert len(page2) == 2 and page2[1].at - page2[0].at == RETRY_AFTER
    assert len(fake.ticket_requests(str(3 * PAGE_SIZE))) == 2
    # Retry-After honoured exactly; the 503 waits the first backoff step (0.5s nominal, jitter 0 -> half).
    assert clock.sleeps == [RETRY_AFTER, 0.25]

    assert "attempt 1/5, waiting 7 s for TicketDesk's rate limit" in caplog.text and "/api/tickets" in caplog.text
    with store.connection() as c:
        run = c.execute("SELECT error_message, counts::text AS counts FROM integration_sync_runs"
                        " WHERE id = %s", (result.run_id,)).fetchone()
    for text in (caplog.text, *events, str(result.to_json()), str(run)):
        assert TOKEN not in text


def test_provider_side_edits_are_picked_up_exactly(store: Any, desk: tuple[TicketDesk, str]) -> None:
    fake, cid = desk
    assert run_stream_sync(cid, "tickets", store=store).counts["synced"] == 23
    assert run_stream_sync(cid, "tickets", store=store).counts["synced"] == 0

    fake.tickets.update("T-4", title="Printer on floor 3 is fixed")
    fake.add_tickets(1)
    again = run_stream_sync(cid, "tickets", store=store)

    assert again.status == "success" and again.counts["synced"] == 2
    assert fake.requests_to("/api/tickets")[-1].query["updated_since"] == (T0 + timedelta(minutes=22)).isoformat()
    assert _one(store, "SELECT name FROM issues i JOIN integration_synced_records r ON r.hissuno_id = i.id"
                       " WHERE r.external_id = 'T-4'") == "Printer on floor 3 is fixed"
    assert _one(store, "SELECT count(*) FROM issues") == 24
    assert again.cursor_after == T0 + timedelta(minutes=24)


def test_a_401_fails_the_run_with_provider_auth_error_and_keeps_the_cursor(
    store: Any, desk: tuple[TicketDesk, str], clock: FakeClock, caplog: Any
) -> None:
    fake, cid = desk
    first = run_stream_sync(cid, "tickets", store=store)
    assert first.status == "success"
    cursor = repo.get_stream(store, cid, "tickets").last_sync_at

    fake.add_tickets(8)
    # The token is revoked after the first page of the next run: records of page 1 land, then 401.
    refused = fake.inject("/api/tickets", 401, json={"error": "invalid_auth"},
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                          when=lambda r: r.query.get("cursor") == str(PAGE_SIZE) and "updated_since" in r.query)
    caplog.set_level(logging.DEBUG)
    failed = run_stream_sync(cid, "tickets", store=store)

    assert failed.status == "error" and failed.error_code == ProviderAuthError.code and not failed.retriable
    assert failed.error == ("ticketdesk GET /api/tickets: 401 Unauthorized; reconnect needed: run "
                            f"`hissuno connect ticketdesk --update {cid}` or reconnect it on the Integrations page")
    incremental_page2 = [r for r in fake.ticket_requests(str(PAGE_SIZE)) if "updated_since" in r.query]
    assert refused.hits == 1 and len(incremental_page2) == 1, "a 401 is not retried"
    assert clock.sleeps == []
    stream = repo.get_stream(store, cid, "tickets")
    assert stream.last_sync_at == cursor and stream.last_sync_status == "error"
    assert stream.last_sync_error == failed.error
    assert _one(store, "SELECT count(*) FROM issues") == 23 + PAGE_SIZE, "page 1 stays ingested"
    assert TOKEN not in caplog.text and TOKEN not in (stream.last_sync_error or "")

    recovered = run_stream_sync(cid, "tickets", store=store)
    assert recovered.status == "success" and recovered.counts["synced"] == 3
    assert _one(store, "SELECT count(*) FROM issues") == 31
    assert recovered.cursor_after == T0 + timedelta(minutes=30)


def test_a_declared_rate_limit_paces_every_client_of_the_connection(store: Any, desk: tuple[TicketDesk, str]) -> None:
    from hissuno_airflow.runtime.services import budget_for

    fake, cid = desk
    declared = registry.get_plugin("ticketdesk").model_copy(update={"rate_limit_per_minute": 240,
                                                                      "rate_limit_burst": 1})
    registry.unregister("ticketdesk")
    registry.register(declared)
    budget = budget_for(declared, cid)
    assert budget is not None and budget is budget_for(declared, cid)
    assert budget_for(declared, "another-connection") is not budget
    assert budget_for(registry.get_plugin("sample"), cid) is None

    started = time.monotonic()
    result = run_stream_sync(cid, "tickets", store=store)
    elapsed = time.monotonic() - started
    assert result.status == "success" and result.counts["synced"] == 23, result.error
    # Five pages at 4 requests/second with no burst: at least four quarter-second waits between them.
    assert len(fake.requests_to("/api/tickets")) == 5 and elapsed >= 1.0


# -- webhooks --------------------------------------------------------------------------------------


class _Woken:
    """A dispatcher that only records which inboxes an intake woke (the test drains them itself)."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, str]] = []

    def dispatch(self, targets: list[tuple[str, str]]) -> None:
        self.targets.extend(targets)


def test_signed_webhooks_update_and_delete_tickets(store: Any, desk: tuple[TicketDesk, str]) -> None:
    fake, cid = desk
    assert run_stream_sync(cid, "tickets", store=store).counts["synced"] == 23
    signer = Signer(registry.get_plugin("ticketdesk").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})
    woken = _Woken()

    def deliver(event: dict[str, Any], event_id: str, sign: Signer = signer) -> Any:
        d = sign(event, url="https://hissuno.invalid/hook", event_id=event_id)
        return receive_webhook("ticketdesk", IntakeRequest("POST", d.url, d.headers, d.body), connection_id=cid,
                               store=store, dispatcher=woken)

    fake.tickets.update("T-2", title="Paper tray 2 is empty")
    deliver(fake.event("ticket.updated", "T-2"), "evt-1")
    fake.tickets.delete("T-3")
    deliver(fake.event("ticket.deleted", "T-3"), "evt-2")
    with pytest.raises(WebhookSignatureError):
        deliver(fake.event("ticket.deleted", "T-5"), "evt-3", sign=signer.forged())
    assert woken.targets == [(cid, "tickets"), (cid, "tickets")]

    drained = process_inbox(cid, "tickets", store=store)

    assert (drained.done, drained.failed) == (2, 0), drained.errors
    by_id = "FROM issues i JOIN integration_synced_records r ON r.hissuno_id = i.id WHERE r.external_id = %s"
    assert _one(store, f"SELECT i.name {by_id}", "T-2") == "Paper tray 2 is empty"
    assert _one(store, f"SELECT i.deleted_at IS NOT NULL {by_id}", "T-3") is True
    assert _one(store, f"SELECT i.deleted_at IS NULL {by_id}", "T-5") is True, "a forged delete changes nothing"


# -- the kit's conformance checks --------------------------------------------------------------------


def test_definition_catalog_and_import_conform(example: ModuleType) -> None:
    plugin = registry.get_plugin("ticketdesk")
    conformance.definition_valid(plugin)
    assert conformance.catalog_has_no_functions_or_secrets(plugin)["id"] == "ticketdesk"
    conformance.import_is_light("ticketdesk.plugin")


def test_streams_ingest_resync_idempotently_and_keep_the_cursor_on_failure(
    store: Any, example: ModuleType, monkeypatch: pytest.MonkeyPatch, serve_fake: Any
) -> None:
    plugin = registry.get_plugin("ticketdesk")
    target = fakes.conformance(store, monkeypatch, serve_fake)
    for sid in target.stream_ids:
        enable_stream(store, target.connection_id, sid)
        assert conformance.stream_ingests_records(plugin, store, target.connection_id, sid).counts["synced"] == 12
        conformance.resync_is_idempotent(plugin, store, target.connection_id, sid)
        conformance.cursor_moves_only_on_success(plugin, store, target.connection_id, sid)


def test_auth_test_accepts_a_good_token_and_refuses_a_revoked_one(
    store: Any, example: ModuleType, monkeypatch: pytest.MonkeyPatch, serve_fake: Any
) -> None:
    target = fakes.auth_target(store, monkeypatch, serve_fake)
    cid = conformance.auth_test_rejects_bad_credentials(registry.get_plugin("ticketdesk"), store, target)
    assert repo.get_connection(store, cid).account_label == fakes.ACCOUNT["name"]


def test_webhook_signature_is_enforced(store: Any, example: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                       serve_fake: Any) -> None:
    target = fakes.webhook_target(store, monkeypatch, serve_fake)
    done = conformance.webhook_signature_enforced(registry.get_plugin("ticketdesk"), store, target)
    assert done["valid"] == "stored 1" and done["forged"] == "refused" and done["stale"] == "refused"


def test_the_example_is_not_a_built_in() -> None:
    from hissuno_airflow.plugins import builtin_plugins

    assert "ticketdesk" not in builtin_plugins()
    assert "ticketdesk" not in [p.id for p in registry.list_plugins()]


# -- the guide shows the tested code ---------------------------------------------------------------

_BLOCK = re.compile(r"^```python (file|excerpt)=(\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
WHOLE_FILES = ("docs/examples/ticketdesk/__init__.py", "docs/examples/ticketdesk/plugin.py",
               "docs/examples/ticketdesk/client.py")


def guide_blocks(text: str) -> list[tuple[str, str, str]]:
    """``(kind, path, code)`` of every code block tagged ```` ```python file=<path> ```` (the whole file)
    or ```` ```python excerpt=<path> ```` (consecutive lines of it)."""
    return [(m.group(1), m.group(2), m.group(3)) for m in _BLOCK.finditer(text)]


def block_problems(kind: str, path: str, code: str, root: Path = ROOT) -> list[str]:
    """Why a tagged block does not show ``path`` as it is; empty when it does."""
    source = root / path
    if not source.is_file():
        return [f"{path}: no such file"]
    text = source.read_text()
    if kind == "file":
        return [] if code == text else [f"{path}: the guide's copy differs from the file"]
    lines, want = text.splitlines(), code.splitlines()
    found = any(lines[i : i + len(want)] == want for i in range(len(lines) - len(want) + 1))
    return [] if want and found else [f"{path}: the excerpt is not a run of lines of the file"]


def test_guide_shows_the_example_files_as_they_are() -> None:
    blocks = guide_blocks(GUIDE.read_text())
    problems = [p for block in blocks for p in block_problems(*block)]
    assert not problems, "\n".join(problems)
    shown_whole = {path for kind, path, _ in blocks if kind == "file"}
    assert shown_whole >= set(WHOLE_FILES), f"the guide must show in full: {set(WHOLE_FILES) - shown_whole}"
    excerpted = {path for kind, path, _ in blocks if kind == "excerpt"}
    assert {"tests/fakes/ticketdesk.py", "tests/plugins/test_ticketdesk.py"} <= excerpted


def test_guide_check_notices_a_changed_line(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("a = 1\nb = 2\nc = 3\n")
    assert block_problems("file", "m.py", "a = 1\nb = 2\nc = 3\n", tmp_path) == []
    assert block_problems("file", "m.py", "a = 1\nb = 20\nc = 3\n", tmp_path) != []
    assert block_problems("excerpt", "m.py", "b = 2\nc = 3\n", tmp_path) == []
    assert block_problems("excerpt", "m.py", "a = 1\nc = 3\n", tmp_path) != []
    assert block_problems("excerpt", "gone.py", "a = 1\n", tmp_path) == ["gone.py: no such file"]
    text = "x\n```python file=m.py\na = 1\n```\n```python\nnot checked\n```\n```python excerpt=m.py\nc = 3\n```\n"
    assert guide_blocks(text) == [("file", "m.py", "a = 1\n"), ("excerpt", "m.py", "c = 3\n")]
