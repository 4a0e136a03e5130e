"""Failed records stay recoverable (issue 9 item 4): kept as JSON whatever the plugin passed, secrets masked,
listed by the CLI and the route, replayed after the fix (re-fetched by id, or re-ingested as kept), with the
outcome on the row and a replay run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from hissuno_airflow import cli, registry
from hissuno_airflow.kit import ApiKeyAuth, AuthResult, Field, Icon, Stream, define_plugin
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.runtime.sync import run_stream_sync
from hissuno_airflow.store import connections as repo

SECRET = "sk_live_replay_0123456789abcdef"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Provider:
    """The provider's conversations (what its API would answer), and the plugin's sender mapping, which
    starts without the provider's ``bot`` sender: the mapping bug a release fixes."""

    def __init__(self) -> None:
        self.convs = {
            f"c{i}": {"subject": f"Conversation {i}", "updated": T0 + timedelta(minutes=i),
                      "messages": [{"from": "bot" if i == 2 else "customer", "body": f"hello {i}"}]}
            for i in range(1, 4)
        }
        self.senders = {"customer": "user", "agent": "human_agent"}
        self.fetched: list[str] = []


P = Provider()


def _session(ctx, ext: str) -> None:
    conv = P.convs[ext]
    # Provider times are handed over as datetimes (what kept the original from serialising a bad record).
    ctx.ingest.session(external_id=ext, updated_at=conv["updated"], created_at=conv["updated"], source="replayable",
                       name=conv["subject"], custom_fields={"note": conv.get("note", "")},
                       messages=[{"sender_type": P.senders.get(m["from"], m["from"]), "content": m["body"],
                                  "created_at": conv["updated"]} for m in conv["messages"]])


def _sync(ctx) -> None:
    since = ctx.since()
    for ext, conv in sorted(P.convs.items(), key=lambda kv: kv[1]["updated"]):
        if since is None or conv["updated"] > since:
            ctx.progress("found", external_id=ext)
            _session(ctx, ext)


def _fetch(ctx, external_id: str) -> None:
    P.fetched.append(external_id)
    _session(ctx, external_id)


@pytest.fixture
def plugin():
    global P
    P = Provider()
    p = define_plugin(
        id="replayable", name="Replayable", description="d", category="sessions", icon=Icon(),
        auth=ApiKeyAuth(fields=(Field(id="apiKey", label="Key", secret=True),),
                        test=lambda c, x: AuthResult(external_account_id="a", account_label="A", credentials=c)),
        streams={"sessions": Stream(kind="sessions", label="S", sync=_sync, fetch=_fetch),
                 "tickets": Stream(kind="sessions", label="T", sync=_sync)},
    )
    registry.register(p)
    yield p
    registry.unregister("replayable")


@pytest.fixture
def cid(store, plugin):
    row, _ = repo.upsert_connection(store, project_id="00000000-0000-0000-0000-000000000001",
                                    plugin_id="replayable", external_account_id="a", account_label="A",
                                    settings=None)
    credential_store(store, "db").save(row, {"apiKey": SECRET})
    enable_stream(store, row.id, "sessions")
    enable_stream(store, row.id, "tickets")
    return row.id


def _rows(store, sql, *args):
    with store.connection() as c:
        return c.execute(sql, args).fetchall()


def _cli(capsys, *argv):
    capsys.readouterr()
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out


def test_an_invalid_record_with_datetimes_lands_in_ingest_errors_and_the_run_continues(store, cid):
    r = run_stream_sync(cid, "sessions", store=store)
    assert r.status == "success", r.error
    assert r.counts["synced"] == 2 and r.counts["failed"] == 1
    (err,) = _rows(store, "SELECT * FROM ingest_errors")
    assert err["external_id"] == "c2" and err["kind"] == "sessions" and err["status"] == "open"
    assert "messages.0.sender_type" in err["reason"]
    assert datetime.fromisoformat(err["record"]["updated_at"]) == T0 + timedelta(minutes=2)
    assert err["record"]["messages"][0]["sender_type"] == "bot"
    # The cursor went past it: an incremental sync alone would never fetch it again.
    assert r.cursor_after == T0 + timedelta(minutes=3)


def test_a_failed_record_is_listed_then_replayed_by_id_after_the_fix(store, cid, web, capsys):
    run_stream_sync(cid, "sessions", store=store)
    rc, out = _cli(capsys, "errors", cid, "--json")
    assert rc == 0
    (listed,) = json.loads(out)
    assert listed["external_id"] == "c2" and listed["replay"] == "fetch" and listed["attempts"] == 0
    assert "sender_type" in listed["reason"]
    route = web.client.get(f"/api/plugins/replayable/{cid}/errors").json()["errors"]
    assert [e["id"] for e in route] == [listed["id"]]
    assert web.anon.get(f"/api/plugins/replayable/{cid}/errors").status_code == 401

    # Replayed before the fix: it fails again; the row stays open with that attempt recorded.
    res = web.client.post(f"/api/plugins/replayable/{cid}/errors/replay", json={"ids": [listed["id"]]})
    assert res.status_code == 200, res.text
    assert res.json()["resolved"] == 0 and res.json()["failed"] == 1
    (row,) = _rows(store, "SELECT status, attempts, last_error FROM ingest_errors")
    assert row["status"] == "open" and row["attempts"] == 1 and "sender_type" in row["last_error"]

    # The plugin release maps the bot sender; an incremental sync does not come back for c2 (cursor).
    P.senders["bot"] = "ai"
    assert run_stream_sync(cid, "sessions", store=store).counts["found"] == 0
    assert _rows(store, "SELECT status FROM ingest_errors")[0]["status"] == "open"

    rc, out = _cli(capsys, "errors", "replay", cid, "--all", "--json")
    assert rc == 0, out
    report = json.loads(out)
    assert report["resolved"] == 1 and report["failed"] == 0
    assert P.fetched == ["c2", "c2"]  # re-fetched by id both times, never a full listing
    (row,) = _rows(store, "SELECT status, attempts, last_error, resolved_at, resolved_run_id::text AS run"
                          " FROM ingest_errors")
    assert row["status"] == "resolved" and row["attempts"] == 2 and row["last_error"] is None
    assert row["resolved_at"] is not None
    (run,) = _rows(store, "SELECT triggered_by, status, counts FROM integration_sync_runs WHERE id = %s", row["run"])
    assert run["triggered_by"] == "replay" and run["status"] == "success" and run["counts"]["synced"] == 1
    (s,) = _rows(store, "SELECT s.id, s.message_count FROM sessions s JOIN integration_synced_records r"
                        " ON r.hissuno_id = s.id WHERE r.external_id = 'c2'")
    assert s["message_count"] == 1
    assert _rows(store, "SELECT count(*) n FROM sessions")[0]["n"] == 3
    # Nothing open is left to list; the resolved row is still there on request.
    assert web.client.get(f"/api/plugins/replayable/{cid}/errors").json()["errors"] == []
    assert len(web.client.get(f"/api/plugins/replayable/{cid}/errors", params={"status": "all"}).json()["errors"]) == 1
    rc, out = _cli(capsys, "errors", cid)
    assert rc == 0 and "(no failed records)" in out


def test_a_record_that_failed_in_the_store_is_re_ingested_as_kept(store, cid, monkeypatch, capsys):
    from hissuno_airflow.store import ingest

    real = ingest.classifier

    def broken(pairs):  # a store-side defect that fails one record's write
        if any("hello 3" in c for _, c in pairs):
            raise RuntimeError("classifier crashed")
        return real()(pairs)

    P.senders["bot"] = "ai"
    monkeypatch.setattr(ingest, "classifier", lambda: broken)  # what each run's ingest classifies with
    r = run_stream_sync(cid, "tickets", store=store)  # a stream without a fetch hook
    assert r.counts["failed"] == 1 and r.counts["synced"] == 2
    rc, out = _cli(capsys, "errors", cid, "--stream", "tickets", "--json")
    (listed,) = json.loads(out)
    assert listed["replay"] == "kept" and "classifier crashed" in listed["reason"]

    monkeypatch.setattr(ingest, "classifier", real)  # the fix
    P.convs["c3"]["subject"] = "changed at the provider since"  # not read again: the kept record is used
    rc, out = _cli(capsys, "errors", "replay", cid, listed["id"], "--json")
    assert rc == 0 and json.loads(out)["resolved"] == 1
    (s,) = _rows(store, "SELECT s.name FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
                        " WHERE r.external_id = 'c3' AND r.stream_id = 'tickets'")
    assert s["name"] == "Conversation 3"
    assert _rows(store, "SELECT status FROM ingest_errors")[0]["status"] == "resolved"
    rc, _ = _cli(capsys, "errors", "replay", cid, listed["id"])
    assert rc == 2  # already resolved: named as bad input


def test_secret_values_are_masked_in_kept_records_even_under_innocent_keys(store, cid, web, capsys):
    hook_secret = "whsec_replay_abcdef0123456789"
    repo.update_connection(store, cid, settings={"webhook_secret": hook_secret})
    P.convs["c2"]["note"] = f"customer pasted {SECRET} here"
    P.convs["c2"]["subject"] = f"{SECRET} and {hook_secret}"
    run_stream_sync(cid, "tickets", store=store)
    (err,) = _rows(store, "SELECT record::text AS record, reason, redacted FROM ingest_errors")
    assert SECRET not in err["record"] and SECRET not in err["reason"] and hook_secret not in err["record"]
    kept = json.loads(err["record"])
    assert kept["custom_fields"]["note"] == "customer pasted *** here" and kept["name"] == "*** and ***"
    assert err["redacted"] is True
    # A redacted kept record is not written back with its masks: without a fetch hook it stays open.
    rc, out = _cli(capsys, "errors", cid, "--json")
    assert SECRET not in out
    (listed,) = json.loads(out)
    assert listed["replay"] is None and "redacted" in listed["replay_blocked"]
    assert SECRET not in web.client.get(f"/api/plugins/replayable/{cid}/errors").text
    rc, out = _cli(capsys, "errors", "replay", cid, "--all", "--json")
    assert rc == 1 and json.loads(out)["records"][0]["status"] == "open"
    (row,) = _rows(store, "SELECT attempts, last_error FROM ingest_errors")
    assert row["attempts"] == 1 and "redacted" in row["last_error"]


def test_a_record_failing_again_keeps_one_open_row_and_a_later_sync_resolves_it(store, cid):
    run_stream_sync(cid, "sessions", store=store)
    from hissuno_airflow.runtime.sync import SyncPlan

    again = run_stream_sync(cid, "sessions", SyncPlan.full(), store=store)
    assert again.counts["failed"] == 1
    # One row for the record, naming the latest run that failed it.
    assert [(r["status"], r["run"]) for r in _rows(store, "SELECT status, run_id::text AS run FROM ingest_errors")] \
        == [("open", again.run_id)]
    P.senders["bot"] = "ai"
    r = run_stream_sync(cid, "sessions", SyncPlan.full(), store=store)
    assert r.counts["failed"] == 0
    (row,) = _rows(store, "SELECT status, resolved_run_id::text AS run FROM ingest_errors")
    assert row["status"] == "resolved" and row["run"] == r.run_id


def test_replay_input_errors_name_the_field(store, cid, web):
    url = f"/api/plugins/replayable/{cid}/errors/replay"
    assert web.client.post(url, json={}).json()["field"] == "ids"
    assert web.client.post(url, json={"ids": "x"}).json()["field"] == "ids"
    res = web.client.post(url, json={"ids": ["00000000-0000-0000-0000-00000000abcd"]})
    assert res.status_code == 404 and res.json()["field"] == "ids"
    assert web.client.post(url, json={"ids": ["nope"]}).status_code == 404
    assert web.client.get(f"/api/plugins/replayable/{cid}/errors", params={"status": "x"}).json()["field"] == "status"
