"""Fault: PostgreSQL (the hissuno store) restarts during a sync and during webhook intake, under real Airflow.

A Linear connection with two team streams: Engineering syncs 3,000 issues (pages slowed a little, so the sync
is running when the store goes down); Design receives signed webhook deliveries posted to the Airflow API
server the whole time, before, during and after the restart. The store stays down for longer than a write
waits for it in place, so the running sync fails; it must fail cleanly (a
retriable error, no stack trace from hissuno, nothing half-written) and Airflow's retry completes it:
every issue exactly once, the cursor at the newest issue. Intake during the outage may refuse deliveries
(the provider redelivers those), but every delivery it acknowledged with a 2xx is stored and processed.

The store is a PostgreSQL cluster of this test's own, so restarting it leaves the session's store alone.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hissuno_airflow import registry
from hissuno_airflow.dag_factory import dag_id_for
from hissuno_airflow.store import connections as repo
from hissuno_airflow.store import db
from tests.fakes.linear import TEAMS, FakeLinear, connect, oauth_env
from tests.fakes.server import FakeClock
from tests.fakes.webhooks import Signer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ISSUES = 3000
ENG, DES = TEAMS[0]["id"], TEAMS[1]["id"]
SYNCED, HOOKED = f"issues:{ENG}", f"issues:{DES}"
DOWN_SECONDS = 10.0
"""How long the store stays down: longer than a write retries in place (``HISSUNO_STORE_RETRY_SECONDS``, 2 s
here, which also bounds the wait for a pooled connection), so the sync fails instead of riding it out (a
restart shorter than the retry is ridden out: ``tests/runtime/test_exactly_once.py``); shorter than the run's
lease (25 s here), so the failure is the store's and not a lapsed lease's."""


@pytest.fixture
def own_store(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A PostgreSQL cluster of this test's own, migrated; yields ``(home, url, store)``."""
    from hissuno_airflow.store.migrate import migrate

    home = Path(tempfile.mkdtemp(prefix="hissuno-restart-"))
    url = db.embedded_url(home)
    own = db.Store(url)
    try:
        migrate(url)
        monkeypatch.setenv("HISSUNO_DATABASE_URL", url)
        db.reset_stores()
        yield home, url, own
    finally:
        own.close()
        db.reset_stores()
        db.stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


class Poster:
    """Posts signed ``Issue`` update deliveries for Design's issues, one after another, until stopped; keeps the
    answer to each (its status, or the connection error)."""

    def __init__(self, url: str, signer: Signer, fake: FakeLinear) -> None:
        self.url, self.signer, self.fake = url, signer, fake
        self.answers: dict[str, int | str] = {}
        self.answered_at: dict[str, float] = {}
        self.issue_of: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-poster", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        issues = self.fake.team_issues(DES)
        with httpx.Client(timeout=20, trust_env=False) as client:
            n = 0
            while not self._stop.is_set():
                issue = issues[n % len(issues)]
                delivery_id = f"delivery-{n}-{uuid.uuid4().hex[:6]}"
                d = self.signer({**self.fake.event("update", issue["id"]), "webhookId": "wh-1"}, url=self.url,
                                event_id=delivery_id)
                try:
                    self.answers[delivery_id] = client.post(self.url, content=d.body, headers=dict(d.headers)).status_code
                except httpx.HTTPError as exc:
                    self.answers[delivery_id] = type(exc).__name__
                self.issue_of[delivery_id] = issue["id"]
                self.answered_at[delivery_id] = time.monotonic()
                n += 1
                time.sleep(0.2)

    def acknowledged(self) -> set[str]:
        return {k for k, v in self.answers.items() if isinstance(v, int) and 200 <= v < 300}

    def acknowledged_after(self, t: float) -> set[str]:
        return {k for k in self.acknowledged() if self.answered_at.get(k, 0) > t}

    def refused(self) -> set[str]:
        return set(self.answers) - self.acknowledged()


def _n(store: Any, sql: str, *args: Any) -> int:
    with store.connection() as c:
        return int(c.execute(sql, args).fetchone()["n"])


def test_a_store_restart_mid_sync_and_mid_intake_fails_cleanly_retries_and_loses_no_acknowledged_event(
        own_store, serve_fake, monkeypatch, airflow_stack):
    home, url, store = own_store
    fake = FakeLinear(0, clock=FakeClock().time)
    fake.page_delay = 0.3
    serve_fake(fake)
    fake.add_issues(ENG, ISSUES)
    fake.add_issues(DES, 10)
    oauth_env(monkeypatch, fake)
    cid = connect(store, fake)
    signer = Signer(registry.get_plugin("linear").webhook_signature)
    repo.update_connection(store, cid, settings={"webhook_secret": signer.secret})

    stack = airflow_stack(
        url, HISSUNO_LOAD_PLUGINS="linear", HISSUNO_LINEAR_API_URL=fake.url,
        HISSUNO_LINEAR_AUTH_URL=fake.url, LINEAR_CLIENT_ID=fake.client_id, LINEAR_CLIENT_SECRET=fake.client_secret,
        HISSUNO_RUN_LEASE_SECONDS="25", HISSUNO_TASK_RETRY_DELAY_SECONDS="8", HISSUNO_STORE_RETRY_SECONDS="2",
        HISSUNO_POOL_SLOTS="2",  # the account's pool: the webhook drains need not wait for the long sync
    )
    stack.enable(cid, [SYNCED])
    stack.enable(cid, [HOOKED], frequency="webhook")
    synced_dag, hooked_dag = dag_id_for(cid, SYNCED), dag_id_for(cid, HOOKED)
    started = time.monotonic()
    stack.start()
    poster = Poster(f"{stack.url}/hissuno/api/plugins/webhook/linear/{cid}", signer, fake)

    def committed() -> bool:
        with store.connection() as c:
            row = c.execute("SELECT counts FROM integration_sync_runs WHERE connection_id = %s AND stream_id = %s"
                            " AND status = 'in_progress'", (cid, SYNCED)).fetchone()
        return row is not None and row["counts"].get("synced", 0) >= 300

    poster.start()
    try:
        stack.wait(committed, 150, "the sync to commit 300 issues")
        acked_before = len(poster.acknowledged())
        # The restart: every connection, session and advisory lock gone, for longer than writes retry.
        db.stop_embedded(home)
        down_at = time.monotonic()
        time.sleep(DOWN_SECONDS)
        assert db.embedded_url(home) == url
        up_at = time.monotonic()
        store.pool.check()  # drop the pool's dead connections now rather than on first use
        # Intake goes on after the restart until it acknowledges deliveries again (its pool reconnects).
        stack.wait(lambda: len(poster.acknowledged_after(up_at)) >= 5, 120, "intake to acknowledge again")
    finally:
        poster.stop()
    acked, refused = poster.acknowledged(), poster.refused()
    assert acked_before >= 1, poster.answers
    assert refused, f"no delivery was refused while the store was down: {poster.answers}"
    # A refusal is a 5xx or no answer in time (the provider redelivers either), never a 4xx that drops the event.
    assert all(isinstance(v, str) or v >= 500 for k, v in poster.answers.items() if k in refused), \
        {k: poster.answers[k] for k in refused}

    ti = stack.wait(lambda: stack.first_task(synced_dag), 180, "the synced stream's retry to finish")
    story = "\n".join(stack.events(synced_dag, ti["run_id"]))
    assert ti["state"] == "success" and ti["try_number"] >= 2, f"{ti}\n{story}"

    def inbox_drained() -> bool:
        with store.connection() as c:
            pending = c.execute("SELECT count(*) AS n FROM webhook_events WHERE stream_id = %s AND status <> 'done'",
                                (HOOKED,)).fetchone()["n"]
        runs = stack.runs(hooked_dag)
        return pending == 0 and bool(runs) and all(r[2] in ("success", "failed") for r in runs)

    stack.wait(inbox_drained, 180, "every stored webhook event to be processed", every=2)
    again = min(poster.answered_at[k] for k in poster.acknowledged_after(up_at)) - up_at
    timings = (f"store down {up_at - down_at:.0f} s, {down_at - started:.0f} s after start; intake acknowledged "
               f"again {again:.0f} s after the store was back; "
               f"{len(acked)} deliveries acknowledged, {len(refused)} refused")

    # The sync: every issue of Engineering exactly once, the cursor where the successful retry put it.
    with store.connection() as c:
        per_id = c.execute("SELECT r.external_id, count(i.id) AS n FROM integration_synced_records r"
                           " JOIN issues i ON i.id = r.hissuno_id WHERE r.connection_id = %s AND r.stream_id = %s"
                           " GROUP BY r.external_id", (cid, SYNCED)).fetchall()
        runs = c.execute("SELECT status, error_message, cursor_after FROM integration_sync_runs"
                         " WHERE connection_id = %s AND stream_id = %s ORDER BY started_at", (cid, SYNCED)).fetchall()
        events = {r["event_id"]: r["status"] for r in c.execute(
            "SELECT event_id, status FROM webhook_events WHERE stream_id = %s", (HOOKED,)).fetchall()}
        hooked_issues = {r["external_id"] for r in c.execute(
            "SELECT external_id FROM integration_synced_records WHERE connection_id = %s AND stream_id = %s",
            (cid, HOOKED)).fetchall()}
    assert {r["external_id"] for r in per_id} == {i["id"] for i in fake.team_issues(ENG)}
    assert all(r["n"] == 1 for r in per_id) and len(per_id) == ISSUES
    assert _n(store, "SELECT count(*) n FROM ingest_errors") == 0
    assert [r["status"] for r in runs][-1] == "success" and "error" in [r["status"] for r in runs[:-1]], runs
    newest = max(datetime.fromisoformat(i["updatedAt"].replace("Z", "+00:00")) for i in fake.team_issues(ENG))
    assert runs[-1]["cursor_after"] == newest == repo.get_stream(store, cid, SYNCED).last_sync_at
    # No acknowledged delivery lost: each is stored for Design's stream and processed; its issue is in the store.
    assert acked <= set(events), sorted(acked - set(events))
    assert all(events[k] == "done" for k in acked), {k: events[k] for k in acked if events[k] != "done"}
    assert {poster.issue_of[k] for k in acked} <= hooked_issues
    # Failed cleanly: the first try said what it had done and that the cursor stayed, and failed retriably.
    assert "[try 1 info] Failed in" in story and "The cursor did not move." in story, story
    assert runs[0]["status"] == "error" and runs[0]["cursor_after"] is None, runs[0]
    print(f"\n{story}\n{timings}; sync runs: {[(r['status'], (r['error_message'] or '')[:80]) for r in runs]}; "
          f"{len(poster.answers)} deliveries posted")
