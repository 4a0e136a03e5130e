"""``python3 dev.py up`` set-up (``hissuno_airflow.devsetup``) run twice: the second run changes nothing.

Airflow is not needed: ``kickoff`` takes the function that queues a DAG run, and the test records calls.
"""

from __future__ import annotations

from typing import Any

from hissuno_airflow import devsetup, settings
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo
from tests.fixtures.store import connect_sample

DEMO_STREAMS = {"sessions", "contacts", "companies", "issues", "knowledge:help-center"}


def _streams(store: Any, connection_id: str) -> dict[str, tuple[bool, str, dict[str, Any]]]:
    return {r.stream_id: (r.enabled, r.frequency, dict(r.filter_config)) for r in repo.list_streams(store, connection_id)}


def _demo(store: Any) -> repo.ConnectionRow:
    rows = [c for c in repo.list_connections(store, project_id=settings.default_project_id(), plugin_id="sample")
            if c.external_account_id == "demo"]
    assert len(rows) == 1, rows
    return rows[0]


def test_second_setup_leaves_the_users_connections_and_streams_alone(store: Any) -> None:
    # The user added a sample workspace of their own before the first `dev.py up`.
    mine = connect_sample(store, "mine")
    enable_stream(store, mine.id, "sessions", frequency="manual", filters={"size": 3})
    before_mine = _streams(store, mine.id)

    devsetup.main()
    demo = _demo(store)
    assert demo.id != mine.id
    assert set(_streams(store, demo.id)) == DEMO_STREAMS
    assert _streams(store, mine.id) == before_mine
    queued: list[tuple[str, str]] = []
    devsetup.kickoff(store, trigger=lambda c, s: queued.append((c, s)), timeout=5)
    assert sorted(queued) == sorted((demo.id, s) for s in DEMO_STREAMS)  # only what set-up enabled

    # The user changes the demo: disables a stream, changes a frequency, removes another.
    enable_stream(store, demo.id, "sessions", enabled=False)
    enable_stream(store, demo.id, "contacts", frequency="manual")
    repo.delete_stream(store, demo.id, "companies")
    before_demo = _streams(store, demo.id)

    devsetup.main()
    devsetup.kickoff(store, trigger=lambda c, s: queued.append((c, s)), timeout=5)
    assert _streams(store, demo.id) == before_demo
    assert before_demo["sessions"][0] is False and before_demo["contacts"][1] == "manual"
    assert "companies" not in before_demo
    assert _streams(store, mine.id) == before_mine
    assert len(queued) == len(DEMO_STREAMS)  # no second round of first syncs
    assert [c.id for c in repo.list_connections(store, plugin_id="sample")].count(demo.id) == 1
    assert len(repo.list_connections(store, plugin_id="sample")) == 2


def test_setup_never_recreates_a_demo_connection_the_user_removed(store: Any) -> None:
    devsetup.main()
    repo.delete_connection(store, _demo(store).id)
    devsetup.main()
    assert repo.list_connections(store, plugin_id="sample") == []


def test_a_demo_connection_from_before_the_marker_is_adopted_untouched(store: Any) -> None:
    # A store set up by an older dev.py: the demo exists with the user's stream choices, no marker.
    demo = connect_sample(store, "demo")
    enable_stream(store, demo.id, "sessions", enabled=False)
    devsetup.main()
    streams = _streams(store, demo.id)
    assert set(streams) == {"sessions"} and streams["sessions"][0] is False
    queued: list[tuple[str, str]] = []
    devsetup.kickoff(store, trigger=lambda c, s: queued.append((c, s)), timeout=5)
    assert queued == []


def test_kickoff_retries_only_what_it_could_not_queue_yet(store: Any) -> None:
    from hissuno_airflow.kit.errors import NotFoundError

    devsetup.main()
    demo = _demo(store)
    calls: list[str] = []

    def not_parsed_yet(connection_id: str, stream_id: str) -> None:
        calls.append(stream_id)
        if stream_id == "issues":
            raise NotFoundError("DAG not parsed yet", field="stream_id")

    devsetup.kickoff(store, trigger=not_parsed_yet, timeout=0.5, poll_seconds=0.1)
    assert "issues" in calls
    calls.clear()
    devsetup.kickoff(store, trigger=lambda c, s: calls.append(s), timeout=5)
    assert calls == ["issues"]
    assert demo.id


def test_follow_prints_each_streams_first_sync_and_every_failure(store: Any) -> None:
    """What ``dev.py up`` shows of the syncs: one line per stream's first success, every failed run."""
    from hissuno_airflow.runtime.sync import run_stream_sync

    conn = connect_sample(store, "follow")
    enable_stream(store, conn.id, "contacts", frequency="manual", filters={"size": 3})
    for _ in range(2):
        assert run_stream_sync(conn.id, "contacts", store=store).status == "success"
    with store.connection() as c:
        c.execute("INSERT INTO integration_sync_runs (connection_id, plugin_id, stream_id, triggered_by, sync_mode,"
                  " status, error_message, started_at, completed_at) VALUES (%s, 'sample', 'contacts', 'cron',"
                  " 'incremental', 'error', 'sample GET /contacts: 503 Service Unavailable', now(), now())",
                  (conn.id,))
    lines: list[str] = []
    devsetup.follow(store, once=True, emit=lines.append)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"synced {conn.id}/contacts (manual) in ") and " 3 synced" in lines[0]
    assert lines[1] == f"FAILED {conn.id}/contacts (cron) in 0 s: sample GET /contacts: 503 Service Unavailable"
