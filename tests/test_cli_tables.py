"""What the terminal shows (issue 14): tables with headers, ``hissuno streams`` with state, frequency, cursor,
last and next run, ``hissuno connect <unknown>`` naming the plugins that exist, ``--frequency webhook``
accepted where the stream takes webhooks and refused by name elsewhere."""

from __future__ import annotations

import json
import re

from hissuno_airflow import settings
from hissuno_airflow.cli import ago, table
from hissuno_airflow.store import connections as repo
from tests.test_cli import cli  # noqa: F401  (the fixture: the real command in a subprocess)

UTC_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC"


def test_table_lines_up_columns_under_their_headers() -> None:
    text = table(["STREAM", "STATE", "NEXT RUN"], [("sessions", "enabled", "in 6 h"), ("issues", None, "-")])
    lines = text.splitlines()
    assert lines[0] == "STREAM    STATE    NEXT RUN"
    assert lines[1] == "sessions  enabled  in 6 h"
    assert lines[2] == "issues    -        -"


def test_streams_shows_state_frequency_cursor_last_and_next_run(cli) -> None:  # noqa: F811
    cid = json.loads(cli("connect", "sample", "--set", "workspace=tables", "--json").stdout)["connection_id"]
    cli("enable", cid, "sessions", "--frequency", "6h", "--filters", '{"size": 5}')
    cli("sync", cid, "sessions")
    text = cli("streams", cid).stdout
    lines = text.splitlines()
    assert lines[0].split() == ["STREAM", "KIND", "STATE", "FREQUENCY", "CURSOR", "LAST", "RUN", "NEXT", "RUN"]
    row = next(line for line in lines if line.startswith("sessions "))
    assert re.search(rf"sessions\s+sessions\s+enabled\s+6h\s+{UTC_TIME}\s+success {UTC_TIME} \(\d+ s ago\)\s+"
                     rf"{UTC_TIME} \(in 6 h\)$", row), row
    contacts = next(line for line in lines if line.startswith("contacts "))
    assert contacts.split()[2:4] == ["not", "enabled"]
    assert "sessions: manual 1h 6h 24h" in text  # what each stream takes
    data = json.loads(cli("streams", cid, "--json").stdout)
    sessions = next(d for d in data if d["key"] == "sessions")["rows"][0]
    assert sessions["last_run"]["status"] == "success" and sessions["next_sync_at"]


def test_connections_runs_and_plugins_print_headers(cli) -> None:  # noqa: F811
    cid = json.loads(cli("connect", "sample", "--set", "workspace=heads", "--json").stdout)["connection_id"]
    assert cli("connections").stdout.splitlines()[0].split() == ["CONNECTION", "PLUGIN", "ACCOUNT", "STATE"]
    assert cli("plugins").stdout.splitlines()[0].split() == ["PLUGIN", "CATEGORY", "AUTH", "STREAMS"]
    assert cli("projects").stdout.splitlines()[0].split() == ["PROJECT", "NAME", "DEFAULT"]
    cli("enable", cid, "sessions", "--filters", '{"size": 2}')
    cli("sync", cid, "sessions")
    runs = cli("runs", cid).stdout.splitlines()
    assert runs[0].split()[:4] == ["STARTED", "STREAM", "LANE", "STATUS"]
    assert re.match(rf"{UTC_TIME}\s+sessions\s+manual\s+success\s+2\s+0\s+0", runs[1]), runs[1]


def test_connect_to_an_unknown_plugin_lists_the_plugins_that_exist(cli) -> None:  # noqa: F811
    proc = cli("connect", "zendeks", ok=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert "unknown plugin 'zendeks'; the plugins that exist: fathom, github," in proc.stderr
    assert all(name in proc.stderr for name in ("sample", "zendesk", "github", "hubspot"))


def test_frequency_webhook_is_taken_where_the_stream_takes_webhooks(cli, store) -> None:  # noqa: F811
    zendesk, _ = repo.upsert_connection(store, project_id=settings.default_project_id(), plugin_id="zendesk",
                                        external_account_id="acme.zendesk.com", account_label="acme", settings={})
    cli("enable", zendesk.id, "tickets", "--frequency", "webhook")
    assert repo.get_stream(store, zendesk.id, "tickets").frequency == "webhook"
    assert "on webhooks" in cli("streams", zendesk.id).stdout
    sample = json.loads(cli("connect", "sample", "--set", "workspace=hooks", "--json").stdout)["connection_id"]
    proc = cli("enable", sample, "sessions", "--frequency", "webhook", ok=False)
    assert proc.returncode == 2
    assert ("--frequency: stream 'sessions' takes manual, 1h, 6h, 24h; got 'webhook'; no stream of sample takes "
            "webhook") in proc.stderr
    assert [r.stream_id for r in repo.list_streams(store, sample)] == []


def test_ago_reads_like_a_person() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert ago(now + timedelta(hours=6), now) == "in 6 h"
    assert ago(now - timedelta(seconds=20), now) == "20 s ago"
