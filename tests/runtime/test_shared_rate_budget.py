"""One request budget per provider account across processes (issue 15): the store's ``rate_budgets`` row
paces every client of the account, wherever it runs.

The slow tests run four streams of one Notion account as four ``hissuno sync`` processes at once against
a fake that enforces Notion's declared 3 requests a second (burst 3) and records when each request
arrives: with the shared budget it never sees more than that and answers no 429; with per-process budgets
(``HISSUNO_RATE_BUDGET=process``, what every process did before) it is overrun.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit.http.ratelimit import BudgetScope, NamedBudget, RateBudget, SharedRateBudget
from hissuno_airflow.runtime.services import ConnectionServices, budget_for, named_budget
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo
from hissuno_airflow.store.rate_budgets import StoreLedger
from tests.fakes import notion as notion_fakes
from tests.fakes.notion import BURST, PER_MINUTE, LimitedNotion, worst_excess
from tests.fixtures.cli import standalone_env

# -- the ledger and the runtime's wiring -------------------------------------------------------------


def test_a_bucket_lets_a_burst_through_then_spaces_requests_by_the_interval(store: Any) -> None:
    ledger = StoreLedger(store)
    scope = BudgetScope("notion", "acct-1")
    waits = [ledger.reserve(scope, 600, 3) for _ in range(6)]  # 10 a second: one every 0.1 s after 3
    assert waits[:3] == [0.0, 0.0, 0.0]
    for n, wait in enumerate(waits[3:], 1):
        assert n * 0.1 - 0.05 <= wait <= n * 0.1 + 0.01, waits
    # Another account, and another budget of the same account, have buckets of their own.
    assert ledger.reserve(BudgetScope("notion", "acct-2"), 600, 3) == 0.0
    assert ledger.reserve(BudgetScope("notion", "acct-1", "export"), 600, 3) == 0.0
    # An idle bucket refills: after the booked slots have passed, a burst goes through again.
    time.sleep(max(waits) + 0.35)
    assert [ledger.reserve(scope, 600, 3) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_concurrent_bookings_never_share_a_slot(store: Any) -> None:
    """Threads with their own pooled connections: every booked slot is distinct and one interval apart."""
    ledger = StoreLedger(store)
    scope = BudgetScope("notion", "acct-threads")
    started = time.monotonic()
    slots: list[float] = []
    lock = threading.Lock()

    def book() -> None:
        for _ in range(10):
            wait = ledger.reserve(scope, 6000, 1)  # 100 a second, no burst
            with lock:
                slots.append(time.monotonic() - started + wait)

    threads = [threading.Thread(target=book) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    slots.sort()
    assert len(slots) == 40
    # 40 slots at 100 a second span about 0.39 s however the threads interleaved (one slot each 10 ms).
    assert slots[-1] - slots[0] >= 0.39 - 0.05


def test_every_connection_of_one_account_draws_from_one_budget(store: Any) -> None:
    plugin = registry.get_plugin("notion")
    a, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id="notion",
                                  external_account_id="ws-shared", account_label="A", settings=None)
    row = repo.get_connection(store, a.id)
    budget = ConnectionServices(plugin, store=store, connection=row).rate_budget
    assert isinstance(budget, SharedRateBudget) and budget.scope == BudgetScope("notion", "ws-shared")
    assert (budget.per_minute, budget.capacity) == (PER_MINUTE, BURST)
    # A second connection id of the same provider account (another project) gets the same bucket.
    other = budget_for(plugin, "another-connection-id", store=store, account="ws-shared")
    assert isinstance(other, SharedRateBudget) and other.scope == budget.scope
    # No store (a hook test, a connect flow): this process's own bucket, as before.
    assert isinstance(budget_for(plugin, row.id), RateBudget)


def test_the_process_setting_keeps_budgets_in_the_process(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISSUNO_RATE_BUDGET", "process")
    assert isinstance(budget_for(registry.get_plugin("notion"), "c1", store=store, account="ws"), RateBudget)
    monkeypatch.setenv("HISSUNO_RATE_BUDGET", "sometimes")
    with pytest.raises(ValueError, match="HISSUNO_RATE_BUDGET"):
        budget_for(registry.get_plugin("notion"), "c1", store=store, account="ws")


def test_a_named_budget_is_waited_for_before_the_accounts(store: Any) -> None:
    """A client asking for a named budget (Zendesk's export) waits for a slot in it and in the account's."""
    plugin = registry.get_plugin("notion")
    a, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001", plugin_id="notion",
                                  external_account_id="ws-named", account_label="A", settings=None)
    services = ConnectionServices(plugin, store=store, connection=repo.get_connection(store, a.id))
    spec = NamedBudget("export", 600, burst=1)
    with services.http_client("API", budget=spec) as http:
        limiter = http._rate_limiter
    export = named_budget("notion", "ws-named", spec, store=store)
    assert getattr(limiter, "budgets", None) == (export, services.rate_budget)
    assert isinstance(export, SharedRateBudget) and export.scope == BudgetScope("notion", "ws-named", "export")


class _DownLedger:
    def __init__(self) -> None:
        self.calls = 0

    def reserve(self, scope: BudgetScope, per_minute: float, burst: float) -> float:
        self.calls += 1
        raise ConnectionError("store down")


def test_an_unreachable_store_paces_in_the_process_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    ledger = _DownLedger()
    budget = SharedRateBudget(ledger, BudgetScope("notion", "a"), 600, burst=1, sleep=slept.append)
    budget.acquire()
    budget.acquire()  # the local bucket (one token, 10 a second) makes this one wait
    assert ledger.calls == 2 and slept and slept[0] > 0.05
    assert caplog.text.count("unavailable") == 1, "one warning per outage, not one per request"


def test_a_batch_books_the_slots_single_bookings_would(store: Any) -> None:
    """``reserve_many`` moves the bucket as that many ``reserve`` calls would, in one round trip."""
    ledger = StoreLedger(store)
    scope = BudgetScope("notion", "acct-many")
    waits = ledger.reserve_many(scope, 600, 3, 6)  # 10 a second, burst 3: three now, then 0.1 s apart
    assert waits[:3] == [0.0, 0.0, 0.0]
    for n, wait in enumerate(waits[3:], 1):
        assert n * 0.1 - 0.02 <= wait <= n * 0.1 + 0.01, waits
    after = ledger.reserve(scope, 600, 3)  # the next single booking queues behind all six
    assert 0.4 - 0.05 <= after <= 0.4 + 0.01, after


class _CountingLedger:
    """Slots from a clock of its own: hands out the waits it is told to and counts the round trips."""

    def __init__(self, waits: list[float] | None = None) -> None:
        self.singles = 0
        self.batches: list[int] = []
        self.waits = waits

    def reserve(self, scope: BudgetScope, per_minute: float, burst: float) -> float:
        self.singles += 1
        return 0.0

    def reserve_many(self, scope: BudgetScope, per_minute: float, burst: float, count: int) -> list[float]:
        self.batches.append(count)
        return list(self.waits[:count]) if self.waits else [0.0] * count


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _budget(ledger: Any, clock: _Clock, per_minute: float, **kw: Any) -> SharedRateBudget:
    return SharedRateBudget(ledger, BudgetScope("intercom", "a"), per_minute, sleep=clock.sleep, clock=clock, **kw)


def test_fast_requests_book_slots_ahead_in_one_round_trip() -> None:
    # 1 ms between requests under a budget of a million a minute: ~100 requests fit in the 0.1 s hold,
    # capped at 64 a booking; 200 requests take 4 round trips, not 200.
    ledger, clock = _CountingLedger(), _Clock()
    budget = _budget(ledger, clock, 1e6)
    for _ in range(200):
        budget.acquire()
        clock.now += 0.001
    assert ledger.singles + len(ledger.batches) == budget.bookings <= 5, (ledger.singles, ledger.batches)
    assert sum(ledger.batches) + ledger.singles >= 200


@pytest.mark.parametrize(("per_minute", "gap"), [(200, 0.001), (1e6, 0.5)])
def test_a_slow_budget_or_slow_requests_book_one_slot_each(per_minute: float, gap: float) -> None:
    # Zendesk's 200 a minute (a slot every 0.3 s, more than the hold) or requests 0.5 s apart: booking
    # ahead would only book slots that expire unused.
    ledger, clock = _CountingLedger(), _Clock()
    budget = _budget(ledger, clock, per_minute, burst=1e9)
    for _ in range(20):
        budget.acquire()
        clock.now += gap
    assert (ledger.singles, ledger.batches) == (20, [])


def test_a_slot_booked_ahead_is_used_no_later_than_the_hold_and_no_earlier_than_booked() -> None:
    # 100 a second with the bucket empty: the ledger spaces the batch (ten slots, the hold's worth) 10 ms
    # apart, and each request waits for its slot; a pause longer than the hold drops the slots left (spent)
    # and books afresh instead of sending on a stale one.
    ledger, clock = _CountingLedger(waits=[0.01 * i for i in range(64)]), _Clock()
    budget = _budget(ledger, clock, 6000)
    budget.acquire()
    clock.now += 0.001
    budget.acquire()  # a single booking, then a batch once the pace is known
    start = clock.now
    for i in range(1, 5):
        budget.acquire()
        assert clock.now == pytest.approx(start + 0.01 * i)  # slept until slot i of the batch
    assert budget.bookings == 2 and ledger.batches == [10]
    clock.now += 0.5  # longer than the hold: the rest of the batch is stale
    budget.acquire()
    assert budget.bookings == 3


# -- four streams, four processes, one account (slow) ---------------------------------------------------


def _four_streams(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> tuple[LimitedNotion, str, list[str]]:
    fake = serve_fake(LimitedNotion(rows=0, page_size_cap=1))
    monkeypatch.setenv("HISSUNO_NOTION_API_URL", fake.url + "/v1")
    monkeypatch.setenv("HISSUNO_NOTION_AUTH_URL", fake.url + "/v1")
    databases = fake.add_boards(4, 12)
    cid = notion_fakes.connect_token(store, fake.issue_internal_token())
    streams = [f"issues:{db}" for db in databases]
    for sid in streams:
        enable_stream(store, cid, sid, settings={"fieldMapping": notion_fakes.FIELD_MAPPING})
    # The connect flow's requests have no account budget yet (no connection before the account is known):
    # measure from a quiet, full bucket on both sides.
    time.sleep(BURST * 60 / PER_MINUTE + 0.2)
    fake.reset()
    return fake, cid, streams


def _sync_at_once(database_url: str, tmp_path: Any, cid: str, streams: list[str], fake: LimitedNotion,
                  **env: str) -> list[subprocess.CompletedProcess[str]]:
    environ = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
               "HISSUNO_NOTION_API_URL": fake.url + "/v1", "HISSUNO_NOTION_AUTH_URL": fake.url + "/v1", **env}
    procs = [subprocess.Popen([sys.executable, "-m", "hissuno_airflow.cli", "sync", cid, sid, "--json"], env=environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for sid in streams]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _issues(store: Any) -> int:
    with store.connection() as conn:
        return int(conn.execute("SELECT count(*) AS n FROM issues").fetchone()["n"])


@pytest.mark.slow
def test_429_four_streams_in_four_processes_keep_to_the_accounts_declared_rate(
        store: Any, database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> None:
    fake, cid, streams = _four_streams(store, monkeypatch, serve_fake)
    started = time.monotonic()
    results = _sync_at_once(database_url, tmp_path, cid, streams, fake)
    elapsed = time.monotonic() - started
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    assert _issues(store) == 48
    sync_requests = len(fake.arrivals)
    assert sync_requests >= 4 * 12, "every query page is a request"
    assert fake.limited == 0, f"{fake.limited} requests were answered 429"
    excess = worst_excess(fake.arrivals)
    assert excess <= 0, f"a window held {excess:.2f} requests more than the declared rate allows"
    span = max(fake.arrivals) - min(fake.arrivals)
    print(f"\n{len(streams)} processes, {sync_requests} requests over {span:.1f} s ({elapsed:.1f} s with start-up);"
          f" budget floor {(sync_requests - BURST) / 3:.1f} s; worst window excess {excess:.2f}; 429s: {fake.limited}")


@pytest.mark.slow
def test_429_per_process_budgets_overrun_the_account(
        store: Any, database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> None:
    """The control: what every process did before this budget was shared (each paced alone at the full
    rate) overruns the account, so the test above can tell the two apart."""
    fake, cid, streams = _four_streams(store, monkeypatch, serve_fake)
    _sync_at_once(database_url, tmp_path, cid, streams, fake, HISSUNO_RATE_BUDGET="process")
    excess = worst_excess(fake.arrivals)
    print(f"\nper-process budgets: {len(fake.arrivals)} requests, {fake.limited} answered 429, worst window"
          f" excess {excess:.2f}")
    assert fake.limited > 0 and excess > 1
