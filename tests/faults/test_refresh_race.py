"""Fault: many stream DAGs of one OAuth connection start together with an expired access token.

Five Linear teams of one connection, five stream DAGs, one Airflow pool of five slots: the scheduler starts
their tasks at once, each in its own task process, and each finds the access token expired. Linear rotates
refresh tokens (a used one is ``invalid_grant``), and its token endpoint is slow here (a few seconds), so
every task that reads the expired token while another refreshes would send a second refresh and kill the
connection. The refresh runs under a cross-process lock in the store: the fake sees exactly one refresh
request, no ``invalid_grant``, and every run succeeds on its first try.

The credentials live where the Airflow host keeps them (an Airflow Connection, and the Variable overlay a task
writes a refreshed token to), so the lock's re-read after waiting goes through the Task SDK.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hissuno_airflow.dag_factory import dag_id_for
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.store import connections as repo
from tests.fakes.linear import TEAMS, FakeLinear, connect, oauth_env
from tests.fakes.server import FakeClock, FakeRequest, Reply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

STREAMS = 5
PER_TEAM = 20
EXTRA_TEAMS = [{"id": f"team-x{n}", "key": f"X{n}", "name": f"Extra {n}"} for n in range(STREAMS - len(TEAMS))]


class SlowTokenLinear(FakeLinear):
    """Linear whose token endpoint takes ``token_delay`` seconds (outside the fake's lock, so the API keeps
    answering), and which records when each token request was served, in real time."""

    token_delay = 4.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token_calls: list[tuple[float, float]] = []
        self._calls_lock = threading.Lock()

    def _token(self, req: FakeRequest) -> Reply:
        began = time.time()
        time.sleep(self.token_delay)
        try:
            return super()._token(req)
        finally:
            with self._calls_lock:
                self.token_calls.append((began, time.time()))


def _ts(raw: str) -> float:
    ts = datetime.fromisoformat(raw)
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def test_five_stream_dags_of_one_connection_refresh_an_expired_token_once(store, database_url, serve_fake, monkeypatch,
                                                                            airflow_stack):
    fake = serve_fake(SlowTokenLinear(0, clock=FakeClock().time))
    fake.teams.extend(EXTRA_TEAMS)
    teams = [t["id"] for t in fake.teams]
    for team in teams:
        fake.add_issues(team, PER_TEAM)
    oauth_env(monkeypatch, fake)
    cid = connect(store, fake)  # the OAuth round trip: one code exchange, tokens stored

    stack = airflow_stack(
        database_url, HISSUNO_LOAD_PLUGINS="linear", HISSUNO_LINEAR_API_URL=fake.url,
        HISSUNO_LINEAR_AUTH_URL=fake.url, LINEAR_CLIENT_ID=fake.client_id, LINEAR_CLIENT_SECRET=fake.client_secret,
        HISSUNO_POOL_SLOTS=str(STREAMS), HISSUNO_TASK_RETRY_DELAY_SECONDS="3",
    )
    streams = [f"issues:{t}" for t in teams]
    stack.enable(cid, streams)  # (enabling a team asks Linear for the teams, with the live token)
    pool = repo.get_connection(store, cid).settings["airflow_pool"]
    assert stack.sql("SELECT slots FROM slot_pool WHERE pool = ?", pool) == [(STREAMS,)]
    # Then the access token expired (for us and for the provider); the refresh token is live and single-use.
    creds = credential_store(store, "db").load(repo.get_connection(store, cid))
    creds["expires_at"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    fake.expire_access_token(creds["access_token"])
    stack.save_credentials(cid, creds, "airflow")
    assert repo.get_connection(store, cid).credentials_backend == "airflow"
    token_requests_before = fake.count(fake.token_path)
    assert token_requests_before == 1 and fake.refusals == []  # the code exchange

    dag_ids = [dag_id_for(cid, s) for s in streams]
    started = time.monotonic()
    stack.start()

    def all_finished() -> list[dict[str, Any]] | None:
        tis = [stack.first_task(d) for d in dag_ids]
        return tis if all(tis) else None  # type: ignore[return-value]

    tis = stack.wait(all_finished, 240, "every stream's run to finish")
    logs = {d: stack.task_log(d) for d in dag_ids}
    failed = {d: [line[:600] for line in logs[d].splitlines() if '"level":"error"' in line][-3:]
              for d, t in zip(dag_ids, tis, strict=True) if t["state"] != "success"}
    assert not failed, (f"refresh requests: {fake.token_calls}; refusals: {fake.refusals}", failed)

    # One refresh request, no refusal, every run on its first try.
    assert fake.count(fake.token_path) - token_requests_before == 1, fake.token_calls
    assert fake.refreshes == 1 and fake.refusals == []
    assert [t["try_number"] for t in tis] == [1] * STREAMS
    # The tasks really raced: several were running before the one refresh was answered.
    (refresh_began, refresh_done) = fake.token_calls[-1]
    starts = [_ts(t["start_date"]) for t in tis]
    assert sum(s < refresh_done for s in starts) >= 3, (starts, refresh_began, refresh_done)

    # Every team's issues synced; the stored refresh token is the one the provider will accept next.
    with store.connection() as c:
        synced = c.execute("SELECT stream_id, count(*) AS n FROM integration_synced_records WHERE connection_id = %s"
                           " GROUP BY stream_id", (cid,)).fetchall()
    assert {r["stream_id"]: r["n"] for r in synced} == {s: PER_TEAM for s in streams}
    saved = json.loads(stack.python("""
        import json, sys
        from hissuno_airflow.airflow_host import install
        from hissuno_airflow.runtime.credentials import credential_store
        from hissuno_airflow.store import connections as repo
        from hissuno_airflow.store.db import get_store
        install()
        print(json.dumps(credential_store(get_store(), "airflow").load(repo.get_connection(get_store(), sys.argv[1]))))
    """, cid).strip().splitlines()[-1])
    assert [saved["refresh_token"]] == fake.live_refresh_tokens
    assert saved["refresh_token"] != creds["refresh_token"] and creds["refresh_token"] in fake.used_refresh_tokens
    assert fake.token_valid(saved["access_token"])
    print(f"\n{STREAMS} runs done {time.monotonic() - started:.0f} s after the start; {sum(s < refresh_done for s in starts)}"
          f" tasks started before the one refresh ({refresh_done - refresh_began:.1f} s) was answered")
