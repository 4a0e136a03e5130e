"""Fault: four stream DAGs of one Notion account run at once in Airflow, in a pool of four slots (issue 15).

Four Notion databases of one connection, four stream DAGs, one account pool that its user raised to four
slots in Airflow (``airflow pools set``, which the product must keep when it passes through the pool again).
The four DAGs are triggered together through Airflow's REST API; the scheduler starts their tasks at once,
each in its own LocalExecutor task process. The Notion fake enforces Notion's declared 3 requests a second
(burst 3) and records when each request arrives. Every task books its requests in the account's one budget
in the store, so the fake sees no more than the declared rate and answers no 429, while Airflow's own
records show the four tasks running at the same time. The control runs the same with
``HISSUNO_RATE_BUDGET=process`` (each task process paces alone, as before the budget was shared): the
account is overrun. ``tests/runtime/test_shared_rate_budget.py`` shows the same with four CLI processes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from hissuno_airflow.dag_factory import dag_id_for
from hissuno_airflow.store import connections as repo
from tests.fakes import notion as notion_fakes
from tests.fakes.notion import BURST, PER_MINUTE, LimitedNotion, worst_excess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STREAMS = SLOTS = 4
ROWS = 30
"""Rows per database, one query page each: 120 requests, 40 s at the account's rate. Long enough that the
tasks' start-up skew (seconds, on a loaded machine) leaves a stretch where all four run."""


def _ts(raw: str) -> float:
    ts = datetime.fromisoformat(raw)
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def _four_dags_at_once(store: Any, database_url: str, serve_fake: Any, monkeypatch: pytest.MonkeyPatch,
                       airflow_stack: Any, **env: str) -> tuple[LimitedNotion, str, list[str], list[dict[str, Any]]]:
    """Set up the account, its pool of ``SLOTS`` and its four DAGs, trigger them together and wait until each
    run finished: the fake, the connection, the streams and each DAG's task instance."""
    fake = serve_fake(LimitedNotion(rows=0, page_size_cap=1))
    monkeypatch.setenv("HISSUNO_NOTION_API_URL", fake.url + "/v1")
    monkeypatch.setenv("HISSUNO_NOTION_AUTH_URL", fake.url + "/v1")
    streams = [f"issues:{db}" for db in fake.add_boards(STREAMS, ROWS)]
    cid = notion_fakes.connect_token(store, fake.issue_internal_token())
    stack = airflow_stack(database_url, HISSUNO_LOAD_PLUGINS="notion", HISSUNO_NOTION_API_URL=fake.url + "/v1",
                          HISSUNO_NOTION_AUTH_URL=fake.url + "/v1", HISSUNO_TASK_RETRY_DELAY_SECONDS="3",
                          HISSUNO_POOL_SLOTS="1", **env)
    settings = {"fieldMapping": notion_fakes.FIELD_MAPPING}
    stack.enable(cid, streams[:1], "manual", settings=settings)  # creates the account's pool: one slot
    pool = repo.get_connection(store, cid).settings["airflow_pool"]
    assert stack.sql("SELECT slots FROM slot_pool WHERE pool = ?", pool) == [(1,)]
    # The user gives the account room in Airflow; enabling more streams passes through the pool again and
    # must keep the user's size.
    stack.run("airflow", "pools", "set", pool, str(SLOTS), "Hissuno rate budget: notion, four streams at once")
    stack.enable(cid, streams[1:], "manual", settings=settings)
    assert stack.sql("SELECT slots FROM slot_pool WHERE pool = ?", pool) == [(SLOTS,)]
    dag_ids = [dag_id_for(cid, s) for s in streams]
    stack.start()

    # Measure from a quiet, full bucket on both sides: the set-up's requests (connect, instance listings)
    # were tens of seconds ago.
    fake.reset()
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.admin_token()}"},
                      timeout=30) as api:
        for dag_id in dag_ids:
            resp = api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
            assert resp.status_code == 200, resp.text

    def all_finished() -> list[dict[str, Any]] | None:
        tis = [stack.task_instances(d, "manual") for d in dag_ids]
        done = all(t and t[0]["state"] in ("success", "failed") for t in tis)
        return [t[0] for t in tis] if done else None

    tis = stack.wait(all_finished, 360, "the four triggered runs to finish", every=2)
    for dag_id, ti in zip(dag_ids, tis, strict=True):
        assert ti["pid"], (dag_id, ti)  # ran as a task process of Airflow's
    return fake, cid, streams, tis


def _overlap_s(tis: list[dict[str, Any]]) -> float:
    """How long all the task instances were running at once, from Airflow's start and end dates (< 0: never)."""
    return min(_ts(t["end_date"]) for t in tis) - max(_ts(t["start_date"]) for t in tis)


def test_429_four_stream_dags_in_a_pool_of_four_keep_to_the_accounts_declared_rate(
        store, database_url, serve_fake, monkeypatch, airflow_stack):
    fake, cid, streams, tis = _four_dags_at_once(store, database_url, serve_fake, monkeypatch, airflow_stack)
    assert [t["state"] for t in tis] == ["success"] * STREAMS, tis
    with store.connection() as c:
        synced = c.execute("SELECT stream_id, count(*) AS n FROM integration_synced_records WHERE connection_id = %s"
                           " GROUP BY stream_id", (cid,)).fetchall()
        issues = int(c.execute("SELECT count(*) AS n FROM issues").fetchone()["n"])
    assert {r["stream_id"]: r["n"] for r in synced} == {s: ROWS for s in streams} and issues == STREAMS * ROWS
    requests = len(fake.arrivals)
    assert requests >= STREAMS * ROWS, "every query page is a request"
    assert fake.limited == 0, f"{fake.limited} of {requests} requests were answered 429"
    excess = worst_excess(fake.arrivals)
    assert excess <= 0, f"a window held {excess:.2f} requests more than the declared rate allows"
    # The tasks really ran at once, each on its first try (no 429 made one fail and start again later).
    assert [t["try_number"] for t in tis] == [1] * STREAMS, tis
    overlap = _overlap_s(tis)
    assert overlap > 5, f"the four tasks never ran at the same time for long (overlap {overlap:.1f} s): {tis}"
    span = max(fake.arrivals) - min(fake.arrivals)
    print(f"\n{STREAMS} Airflow tasks, all running together for {overlap:.1f} s; {requests} requests over {span:.1f} s"
          f" (budget floor {(requests - BURST) * 60 / PER_MINUTE:.1f} s); worst window excess {excess:.2f};"
          f" 429s: {fake.limited}; tries: {[t['try_number'] for t in tis]}")


def test_429_per_process_budgets_in_a_pool_of_four_overrun_the_account(
        store, database_url, serve_fake, monkeypatch, airflow_stack):
    """The control: each task process pacing alone at the full rate overruns the account, so the test above
    can tell the two apart. (One process paced alone never exceeds the rate: a window above it means tasks
    sent at once. Their first tries fail on the 429s and Airflow retries them, so the last tries' dates,
    which is all ``task_instance`` keeps, need not overlap.)"""
    fake, _, _, tis = _four_dags_at_once(store, database_url, serve_fake, monkeypatch, airflow_stack,
                                         HISSUNO_RATE_BUDGET="process")
    excess = worst_excess(fake.arrivals)
    print(f"\nper-process budgets: {len(fake.arrivals)} requests, {fake.limited} answered 429, worst window excess"
          f" {excess:.2f}; (state, tries) {[(t['state'], t['try_number']) for t in tis]}")
    assert fake.limited > 0 and excess > 1
