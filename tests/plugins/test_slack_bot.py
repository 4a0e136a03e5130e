"""Slack: threads captured as sessions and the bot's reply decisions, one rule at a time.

Events go through the real intake (signature, dedupe) into the stream's inbox and are processed by the
plugin against the stateful Slack fake on 127.0.0.1, writing to the real store. An OpenAI-compatible fake
(``FakeLLM``) stands in for the model where a rule needs one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hissuno_airflow.plugins.slack import responder as responder_mod
from hissuno_airflow.plugins.slack.decide import TAKEOVER_PHRASES
from hissuno_airflow.store import connections as repo
from tests.fakes.server import FakeProvider, FakeRequest, Reply, post
from tests.fakes.slack import BOT_USER, Workspace, serve

CH = "C0SUPPORT"


class FakeLLM(FakeProvider):
    """``POST /v1/chat/completions``: RESPOND/SKIP for the classifier prompt, an answer otherwise."""

    name = "llm"

    def __init__(self) -> None:
        super().__init__()
        self.classify = "RESPOND"
        self.prompts: list[list[dict[str, str]]] = []

    @post("/v1/chat/completions")
    def chat(self, req: FakeRequest) -> Reply:
        messages = req.json()["messages"]
        self.prompts.append(messages)
        text = self.classify if "RESPOND or SKIP" in messages[-1]["content"] else "Grounded answer: use the CSV export."
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def ws(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> Workspace:
    fake = serve(monkeypatch, serve_fake)
    fake.add_user("UCUST001", "Cora Customer", "cora@customer.example")
    fake.add_user("USTAFF01", "Sam Staff", "sam@acme.test")
    fake.add_user("USTAFF02", "Pat Staff", "pat@acme.test")
    fake.add_channel(CH, "support")
    fake.add_channel("C0QUIET", "quiet-watch")
    return Workspace(store, fake)


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> FakeLLM:
    fake: FakeLLM = serve_fake(FakeLLM())
    monkeypatch.setenv("HISSUNO_LLM_BASE_URL", fake.url + "/v1")
    monkeypatch.setenv("HISSUNO_LLM_API_KEY", "llm-key-123")
    return fake


@pytest.fixture(autouse=True)
def _default_responder() -> Iterator[None]:
    yield
    responder_mod.set_responder(None)


def test_a_mention_gets_eyes_then_a_reply_in_thread_then_a_check_mark(ws: Workspace) -> None:
    msg = ws.mention(CH, "UCUST001", "how do I export my data?")
    ts = msg["ts"]
    assert ws.fake.reaction_log == [("add", CH, ts, "eyes"), ("remove", CH, ts, "eyes"),
                                    ("add", CH, ts, "white_check_mark")]
    [reply] = ws.replies_in(ts)
    session = ws.session(CH, ts)
    assert session is not None
    # No model configured: a short acknowledgement naming the captured session.
    assert "captured this thread" in reply and str(session["id"]) in reply
    assert [m["sender_type"] for m in session["messages"]] == ["user", "ai"]
    assert session["messages"][0]["content"] == "how do I export my data?"  # the bot's mention stripped
    meta = session["user_metadata"]
    assert (meta["slack_workspace_id"], meta["slack_channel_id"], meta["slack_thread_ts"]) == ("T0ACME01", CH, ts)
    assert session["name"] == "Slack: #support"


def test_the_acknowledgement_links_the_session_where_sessions_are_shown(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HISSUNO_SLACK_SESSION_URL", "https://app.example.com/sessions/{session_id}")
    msg = ws.mention(CH, "UCUST001", "hello")
    session = ws.session(CH, msg["ts"])
    assert session is not None
    assert f"<https://app.example.com/sessions/{session['id']}|session {session['id']}>" in ws.replies_in(msg["ts"])[0]


def test_the_same_mention_as_app_mention_and_as_message_is_answered_once(ws: Workspace) -> None:
    parent = ws.fake.say(CH, "UCUST001", "Our sync is stuck")
    ws.mention(CH, "USTAFF01", "can you help here?", thread_ts=parent["ts"])
    mention = ws.fake.thread(CH, parent["ts"])[1]
    assert len(ws.replies_in(parent["ts"])) == 1
    # Slack also sends the mention as a ``message`` event (another event id): no second answer.
    assert ws.send(ws.fake.message_event(mention, CH)).done == 1
    assert len(ws.replies_in(parent["ts"])) == 1


def test_passive_channel_captures_a_mention_without_answering(ws: Workspace) -> None:
    ws.configure(channels=[{"id": "C0QUIET", "mode": "passive", "capture_scope": "all"}])
    msg = ws.mention("C0QUIET", "USTAFF01", "fyi")
    assert ws.fake.posted == [] and ws.fake.reaction_log == []
    assert ws.session("C0QUIET", msg["ts"]) is not None


def _tracked_thread(ws: Workspace) -> str:
    parent = ws.mention(CH, "UCUST001", "export fails")
    return str(parent["ts"])


def test_a_reply_mentioning_another_user_is_not_answered(ws: Workspace, llm: FakeLLM) -> None:
    ts = _tracked_thread(ws)
    before = len(ws.replies_in(ts))
    ws.say(CH, "UCUST001", "<@USTAFF01> can you check my account?", thread_ts=ts)
    assert len(ws.replies_in(ts)) == before
    # ... while the captured session follows the thread, the mention readable.
    session = ws.session(CH, ts)
    assert session is not None and session["messages"][-1]["content"] == "@Sam Staff can you check my account?"


def test_a_takeover_phrase_stops_the_bot_for_the_rest_of_the_thread(ws: Workspace) -> None:
    ts = _tracked_thread(ws)
    before = len(ws.replies_in(ts))
    ws.say(CH, "USTAFF01", "Thanks Hissuno, I'll handle this", thread_ts=ts)
    ws.say(CH, "UCUST001", "ok, waiting", thread_ts=ts)
    ws.mention(CH, "UCUST001", "are you there?", thread_ts=ts)  # even a mention: the thread is a person's now
    assert len(ws.replies_in(ts)) == before
    session = ws.session(CH, ts)
    assert session is not None and session["user_metadata"]["human_takeover"] is True
    assert len(TAKEOVER_PHRASES) == 20


def test_the_bot_answers_when_it_was_the_last_responder_even_if_the_classifier_says_skip(
    ws: Workspace, llm: FakeLLM
) -> None:
    ts = _tracked_thread(ws)
    llm.classify = "SKIP"
    ws.say(CH, "UCUST001", "and the CSV?", thread_ts=ts)  # the bot wrote just before: rule 4
    assert ws.replies_in(ts)[-1] == "Grounded answer: use the CSV export."
    assert len(ws.replies_in(ts)) == 2


def test_otherwise_the_classifier_decides(ws: Workspace, llm: FakeLLM) -> None:
    ts = _tracked_thread(ws)
    ws.say(CH, "USTAFF01", "<@USTAFF02> can you look?", thread_ts=ts)  # rule 2: skip
    asked = len(llm.prompts)
    ws.say(CH, "USTAFF02", "I am looking at the logs", thread_ts=ts)  # after a person: the classifier, RESPOND
    assert len(ws.replies_in(ts)) == 2 and len(llm.prompts) == asked + 2  # classified, then answered
    ws.say(CH, "USTAFF01", "<@USTAFF02> thanks", thread_ts=ts)
    llm.classify = "SKIP"
    ws.say(CH, "USTAFF02", "deploying the fix", thread_ts=ts)  # the classifier says SKIP
    assert len(ws.replies_in(ts)) == 2
    # A classifier that fails means respond.
    llm.inject_5xx("/v1/chat/completions", times=1)
    ws.say(CH, "USTAFF01", "done", thread_ts=ts)
    assert len(ws.replies_in(ts)) == 3


def test_without_a_model_the_classifier_fallback_answers(ws: Workspace) -> None:
    ts = _tracked_thread(ws)
    ws.say(CH, "USTAFF01", "<@USTAFF02> can you check?", thread_ts=ts)  # rule 2: skip
    assert len(ws.replies_in(ts)) == 1
    ws.say(CH, "USTAFF02", "checking", thread_ts=ts)  # the classifier's place: no model -> respond
    assert len(ws.replies_in(ts)) == 2


def test_untracked_threads_capture_external_participants_without_answering(ws: Workspace) -> None:
    internal = ws.fake.say(CH, "USTAFF01", "lunch?")
    ws.say(CH, "USTAFF02", "sure", thread_ts=internal["ts"])
    assert ws.session(CH, internal["ts"]) is None  # external_only: staff-only threads are not captured
    external = ws.fake.say(CH, "USTAFF01", "welcome Cora")
    ws.say(CH, "UCUST001", "thanks, one question", thread_ts=external["ts"])
    session = ws.session(CH, external["ts"])
    assert session is not None and session["user_metadata"]["is_external"] is True
    assert ws.fake.posted == []
    # The external author became a contact, linked to the session; staff did not.
    with ws.store.connection() as conn:
        emails = [r["email"] for r in conn.execute("SELECT email FROM contacts ORDER BY email").fetchall()]
    assert emails == ["cora@customer.example"]
    # ``all`` in a passive channel captures the staff-only thread too.
    ws.configure(channels=[{"id": CH, "mode": "passive", "capture_scope": "all"}])
    ws.say(CH, "USTAFF01", "tuesday then", thread_ts=internal["ts"])
    assert ws.session(CH, internal["ts"]) is not None


def test_top_level_and_bot_messages_are_ignored(ws: Workspace) -> None:
    msg = ws.fake.say(CH, "UCUST001", "top level")
    assert ws.send(ws.fake.message_event(msg, CH)).done == 1
    bot = ws.fake.say(CH, BOT_USER, "I am the bot", thread_ts=msg["ts"], bot=True)
    assert ws.send(ws.fake.message_event(bot, CH)).done == 1
    assert ws.sessions() == 0 and ws.fake.posted == []


def test_a_thread_is_one_session_updated_by_replies_edits_and_deletions(ws: Workspace) -> None:
    ts = _tracked_thread(ws)
    ws.configure(channels=[{"id": CH, "mode": "passive", "capture_scope": "all"}])
    reply = ws.say(CH, "UCUST001", "it says error 42", thread_ts=ts)
    ws.say(CH, "USTAFF01", "on it", thread_ts=ts)
    session = ws.session(CH, ts)
    assert session is not None and ws.sessions() == 1
    assert [m["content"] for m in session["messages"]][-2:] == ["it says error 42", "on it"]
    assert ws.send(ws.fake.edit(CH, reply["ts"], "it says error 43")).failed == 0
    edited = ws.session(CH, ts)
    assert edited is not None and edited["id"] == session["id"]
    assert "it says error 43" in [m["content"] for m in edited["messages"]]
    assert ws.send(ws.fake.remove(CH, reply["ts"])).failed == 0
    after = ws.session(CH, ts)
    assert after is not None and "it says error 43" not in [m["content"] for m in after["messages"]]
    assert ws.sessions() == 1
    # The whole thread gone: its session is deleted (through the kit's delete primitive).
    for m in reversed(ws.fake.thread(CH, ts)):
        event = ws.fake.remove(CH, m["ts"])
    assert ws.send(event).failed == 0
    assert ws.session(CH, ts) is None


def test_a_grounded_answer_uses_the_projects_knowledge(ws: Workspace, llm: FakeLLM, sample_connection: Any) -> None:
    from hissuno_airflow.runtime.streams import enable_stream
    from hissuno_airflow.runtime.sync import SyncPlan, run_stream_sync

    enable_stream(ws.store, sample_connection.id, "knowledge:help-center")
    assert run_stream_sync(sample_connection.id, "knowledge:help-center", SyncPlan(), store=ws.store).status == "success"
    with ws.store.connection() as conn:
        chunk = conn.execute("SELECT chunk_text FROM knowledge_chunks ORDER BY chunk_index LIMIT 1").fetchone()
    msg = ws.mention(CH, "UCUST001", chunk["chunk_text"][:300])
    assert ws.replies_in(msg["ts"]) == ["Grounded answer: use the CSV export."]
    system = llm.prompts[-1][0]["content"]
    assert chunk["chunk_text"] in system  # the nearest chunk went to the model


def test_a_failing_responder_apologises_and_drops_the_eyes(ws: Workspace) -> None:
    def broken(inp: Any) -> str:
        raise RuntimeError("model down")

    responder_mod.set_responder(broken)
    msg = ws.mention(CH, "UCUST001", "help")
    assert ws.replies_in(msg["ts"]) == [
        "Sorry, I couldn't put an answer together just now. Someone from the team will follow up here."]
    assert ws.fake.reaction_log == [("add", CH, msg["ts"], "eyes"), ("remove", CH, msg["ts"], "eyes")]


def test_a_configured_responder_replaces_the_default(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISSUNO_SLACK_RESPONDER", "tests.plugins.test_slack_bot:echo_responder")
    msg = ws.mention(CH, "UCUST001", "ping")
    assert ws.replies_in(msg["ts"]) == ["echo: ping (external)"]


def echo_responder(inp: responder_mod.ResponderInput) -> str:
    return f"echo: {inp.question} ({'external' if inp.external else 'internal'})"


def test_a_revoked_token_marks_the_connection_reconnect_needed(ws: Workspace) -> None:
    for token in list(ws.fake.token_accounts):
        ws.fake.revoke_token(token)
    msg = ws.fake.say(CH, "UCUST001", "<@UBOT0001> hello?")
    result = ws.send(ws.fake.mention_event(msg, CH))
    assert result.failed == 1 and "token_revoked" in result.errors[0]
    row = repo.get_connection(ws.store, ws.connection_id)
    assert row.needs_reconnect and "reconnect needed" in (row.auth_error or "")
    with ws.store.connection() as conn:
        stored = conn.execute("SELECT error FROM webhook_events WHERE status = 'failed'").fetchone()["error"]
    for token in ws.fake.token_accounts:  # the dead token is named nowhere
        assert token not in (row.auth_error or "") and token not in stored and token not in result.errors[0]


def test_app_uninstalled_marks_the_connection_reconnect_needed(ws: Workspace) -> None:
    assert ws.send({"type": "app_uninstalled"}).failed == 1
    assert repo.get_connection(ws.store, ws.connection_id).needs_reconnect


def test_tokens_revoked_marks_the_connection_only_when_the_bot_token_is_revoked(ws: Workspace) -> None:
    # A user token of the workspace revoked: the bot's token still works, nothing to reconnect.
    assert ws.send({"type": "tokens_revoked", "tokens": {"oauth": ["UCUST001"], "bot": []}}).failed == 0
    assert not repo.get_connection(ws.store, ws.connection_id).needs_reconnect
    revoked = ws.send({"type": "tokens_revoked", "tokens": {"oauth": [], "bot": [BOT_USER]}})
    assert revoked.failed == 1 and "tokens_revoked" in revoked.errors[0]
    assert repo.get_connection(ws.store, ws.connection_id).needs_reconnect
