"""A stateful fake of Slack (providers.md section 1), for ``hissuno_airflow/plugins/slack``.

One server plays both hosts: ``GET /oauth/v2/authorize`` (the consent page, granting at once) and the Web API
under ``/api/<method>`` (point ``HISSUNO_SLACK_AUTH_URL`` at ``url`` and ``HISSUNO_SLACK_API_URL`` at
``url + "/api"``). OAuth is ``FakeOAuthServer`` with Slack's shape: ``oauth.v2.access`` takes the client as
HTTP Basic and answers HTTP 200 ``{"ok": true, "access_token": "xoxb-...", "token_type": "bot", "bot_user_id",
"app_id", "team": {id, name}, "authed_user": {id}, "scope"}``, or ``{"ok": false, "error": "invalid_code"}``
(every refusal is a 200 with ``ok: false``, as Slack answers). ``rotation=True`` turns on token rotation:
``expires_in`` 43200 and a single-use ``xoxe-1-`` refresh token, rotated on each ``grant_type=refresh_token``.

Web API methods (GET query or POST JSON/form; ``Authorization: Bearer``; a missing, unknown, expired or
revoked token is ``ok: false`` with ``not_authed`` / ``invalid_auth`` / ``token_expired`` / ``token_revoked``):
``auth.test``, ``users.info``, ``conversations.info``, ``conversations.list``, ``conversations.history``
(top-level messages and thread parents, newest first, ``oldest``), ``conversations.replies`` (parent then
replies), each paged by ``response_metadata.next_cursor`` ("" on the last page, ``page_size`` per page);
``chat.postMessage`` (recorded in ``posted`` and added to the thread as the bot), ``reactions.add`` /
``reactions.remove`` (recorded in ``reaction_log``; ``already_reacted`` / ``no_reaction``).

Test-side helpers: ``add_user``, ``add_channel``, ``say`` (a message or thread reply, returning it),
``edit`` and ``remove`` (with the ``message_changed`` / ``message_deleted`` events Slack would send),
``event(inner)`` (the ``event_callback`` envelope with a fresh ``event_id``) and ``mention_event``.
429 with ``Retry-After`` comes from the base's ``inject_429`` / ``rate_limit``.

The module also defines the conformance factories of ``tests/plugins/test_conformance.py``.
"""

from __future__ import annotations

import base64
import itertools
import json as jsonlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit.testing import AuthTarget, ConformanceTarget, WebhookTarget
from tests.fakes.oauth import FakeOAuthServer
from tests.fakes.server import FakeRequest, FakeResponse, Reply, route
from tests.fakes.webhooks import Signer

TEAM_ID = "T0ACME01"
TEAM_NAME = "Acme"
BOT_USER = "UBOT0001"
BOT_ID = "BBOT0001"
APP_ID = "A0HISSUNO"
INSTALLER = "UINSTALL1"
CLIENT_ID = "1234.5678"
CLIENT_SECRET = "slack-client-secret-abc123"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"next:{offset}".encode()).decode()


def _offset(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().split(":", 1)[1])
    except (ValueError, IndexError):
        return -1


class FakeSlack(FakeOAuthServer):
    """Slack's OAuth v2 and the Web API methods the plugin uses; see the module docstring."""

    name = "slack"
    client_id = CLIENT_ID
    client_secret = CLIENT_SECRET
    authorize_path = "/oauth/v2/authorize"
    token_path = "/api/oauth.v2.access"
    revoke_path = None
    userinfo_path = None
    scope_separator = ","
    token_auth_method = "client_secret_basic"
    access_ttl = None
    issue_refresh_tokens = False
    access_prefix = "xoxb-"
    refresh_prefix = "xoxe-1-"

    def __init__(self, *, rotation: bool = False, page_size: int = 2, clock: Callable[[], float] = time.time) -> None:
        knobs: dict[str, Any] = {"clock": clock}
        if rotation:
            knobs.update(access_ttl=43200, issue_refresh_tokens=True, rotate_refresh_tokens=True)
        super().__init__(**knobs)
        self.account = {"id": TEAM_ID, "name": TEAM_NAME}
        self.page_size = page_size
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.posted: list[dict[str, Any]] = []
        self.reaction_log: list[tuple[str, str, str, str]] = []
        """(``add``/``remove``, channel, ts, name) in order."""
        self.reactions: set[tuple[str, str, str]] = set()
        self._ts = itertools.count(1)
        self._events = itertools.count(1)
        self.add_user(BOT_USER, "hissuno", None, bot=True)
        self.add_user(INSTALLER, "Ina Staller", "ina@acme.test")

    # --- data ---------------------------------------------------------------------------------------

    def add_user(self, uid: str, name: str, email: str | None, *, bot: bool = False) -> dict[str, Any]:
        profile: dict[str, Any] = {"real_name": name, "display_name": name.split()[0]}
        if email:
            profile["email"] = email
        user = {"id": uid, "team_id": TEAM_ID, "name": name.lower().replace(" ", "."), "real_name": name,
                "is_bot": bot, "deleted": False, "profile": profile}
        with self._lock:
            self.users[uid] = user
        return user

    def add_channel(self, cid: str, name: str, *, member: bool = True, private: bool = False) -> dict[str, Any]:
        ch = {"id": cid, "name": name, "is_channel": not private, "is_group": private, "is_private": private,
              "is_member": member, "is_archived": False, "created": int(self.clock())}
        with self._lock:
            self.channels[cid] = ch
            self.messages.setdefault(cid, [])
        return ch

    def next_ts(self) -> str:
        return f"{int(self.clock())}.{next(self._ts):06d}"

    def say(self, channel: str, user: str, text: str, *, thread_ts: str | None = None,
            bot: bool = False) -> dict[str, Any]:
        """Post a message (a reply when ``thread_ts``) as ``user``; returns it as Slack stores it."""
        with self._lock:
            ts = self.next_ts()
            msg: dict[str, Any] = {"type": "message", "ts": ts, "user": user, "text": text, "team": TEAM_ID}
            if bot:
                msg["bot_id"] = BOT_ID
            if thread_ts:
                msg["thread_ts"] = thread_ts
                msg["parent_user_id"] = self._find(channel, thread_ts).get("user")
                parent = self._find(channel, thread_ts)
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = int(parent.get("reply_count") or 0) + 1
                parent["latest_reply"] = ts
            self.messages.setdefault(channel, []).append(msg)
            return dict(msg)

    def _find(self, channel: str, ts: str) -> dict[str, Any]:
        for m in self.messages.get(channel, []):
            if m["ts"] == ts:
                return m
        raise KeyError(f"no message {ts} in {channel}")

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        with self._lock:
            msgs = [m for m in self.messages.get(channel, [])
                    if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]
            return [dict(m) for m in sorted(msgs, key=lambda m: float(m["ts"]))]

    def edit(self, channel: str, ts: str, text: str) -> dict[str, Any]:
        """Edit a message; returns the ``message_changed`` event."""
        with self._lock:
            m = self._find(channel, ts)
            previous = dict(m)
            m["text"] = text
            m["edited"] = {"user": m.get("user"), "ts": self.next_ts()}
            return {"type": "message", "subtype": "message_changed", "hidden": True, "channel": channel,
                    "ts": self.next_ts(), "message": dict(m), "previous_message": previous, "channel_type": "channel"}

    def remove(self, channel: str, ts: str) -> dict[str, Any]:
        """Delete a message; returns the ``message_deleted`` event."""
        with self._lock:
            m = self._find(channel, ts)
            self.messages[channel].remove(m)
            if m.get("thread_ts") and m["thread_ts"] != ts:
                parent = self._find(channel, m["thread_ts"])
                parent["reply_count"] = max(0, int(parent.get("reply_count") or 1) - 1)
            return {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": channel,
                    "ts": self.next_ts(), "deleted_ts": ts, "previous_message": dict(m), "channel_type": "channel"}

    def event(self, inner: dict[str, Any], *, event_id: str | None = None, team_id: str = TEAM_ID) -> dict[str, Any]:
        """The ``event_callback`` envelope Slack posts for ``inner``."""
        eid = event_id or f"Ev{next(self._events):08d}"
        return {"token": "verification-token", "team_id": team_id, "api_app_id": APP_ID, "type": "event_callback",
                "event": {**inner, "event_ts": inner.get("ts", "")}, "event_id": eid,
                "event_time": int(self.clock()),
                "authorizations": [{"team_id": team_id, "user_id": BOT_USER, "is_bot": True}]}

    @staticmethod
    def message_event(msg: dict[str, Any], channel: str) -> dict[str, Any]:
        return {**msg, "channel": channel, "channel_type": "channel"}

    @staticmethod
    def mention_event(msg: dict[str, Any], channel: str) -> dict[str, Any]:
        return {**msg, "type": "app_mention", "channel": channel}

    # --- OAuth in Slack's shape ---------------------------------------------------------------------

    def _refuse(self, status: int, error: str, description: str, **extra: Any) -> FakeResponse:
        self.refusals.append({"error": error, "error_description": description, **extra})
        if status == 302:  # the authorize page redirects with the error, as the base does
            return FakeResponse(302, {"error": error})
        slack_error = {"invalid_grant": "invalid_code", "invalid_client": "invalid_client_id"}.get(error, error)
        if extra.get("grant_type") == "refresh_token" and error == "invalid_grant":
            slack_error = "invalid_refresh_token"
        return FakeResponse(200, {"ok": False, "error": slack_error})

    def _issue(self, account: dict[str, Any], scopes: tuple[str, ...], *, refresh: bool = True) -> dict[str, Any]:
        body = super()._issue(account, scopes, refresh=refresh)
        return {"ok": True, **body, "token_type": "bot", "bot_user_id": BOT_USER, "app_id": APP_ID,
                "scope": ",".join(scopes) or "chat:write", "team": {"id": account["id"], "name": account["name"]},
                "enterprise": None, "is_enterprise_install": False,
                "authed_user": {"id": INSTALLER, "scope": "", "token_type": "user"}}

    # --- Web API ------------------------------------------------------------------------------------

    def _args(self, req: FakeRequest) -> dict[str, str]:
        args = dict(req.query)
        if req.method == "POST" and req.body:
            if (req.header("content-type") or "").startswith("application/json"):
                data = req.json() or {}
                args.update({str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {})
            else:
                args.update(dict(parse_qsl(req.body.decode(), keep_blank_values=True)))
        return args

    def _auth_error(self, req: FakeRequest) -> FakeResponse | None:
        token = req.bearer_token
        if not token:
            return FakeResponse(200, {"ok": False, "error": "not_authed"})
        if token in self.revoked:
            return FakeResponse(200, {"ok": False, "error": "token_revoked"})
        if token in self.tokens and not self.token_valid(token):
            return FakeResponse(200, {"ok": False, "error": "token_expired"})
        if not self.token_valid(token):
            return FakeResponse(200, {"ok": False, "error": "invalid_auth"})
        return None

    def _page(self, items: list[dict[str, Any]], key: str, args: dict[str, str]) -> dict[str, Any]:
        limit = min(self.page_size, int(args.get("limit") or self.page_size))
        start = _offset(args["cursor"]) if args.get("cursor") else 0
        if start < 0:
            return {"ok": False, "error": "invalid_cursor"}
        chunk = items[start:start + limit]
        nxt = _cursor(start + limit) if start + limit < len(items) else ""
        return {"ok": True, key: chunk, "has_more": bool(nxt), "response_metadata": {"next_cursor": nxt}}

    @route("GET", "/api/{method}")
    def api_get(self, req: FakeRequest, method: str) -> Reply:
        return self._api(req, method)

    @route("POST", "/api/{method}")
    def api_post(self, req: FakeRequest, method: str) -> Reply:
        if method == "oauth.v2.access":
            return self._token(req)
        return self._api(req, method)

    def _api(self, req: FakeRequest, method: str) -> Reply:
        refused = self._auth_error(req)
        if refused is not None:
            return refused
        a = self._args(req)
        with self._lock:
            handler = getattr(self, "m_" + method.replace(".", "_"), None)
            if handler is None:
                return {"ok": False, "error": "unknown_method"}
            return handler(a)  # type: ignore[no-any-return]

    def m_auth_test(self, a: dict[str, str]) -> Reply:
        return {"ok": True, "url": "https://acme.slack.com/", "team": TEAM_NAME, "user": "hissuno",
                "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}

    def m_users_info(self, a: dict[str, str]) -> Reply:
        user = self.users.get(a.get("user", ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def m_conversations_info(self, a: dict[str, str]) -> Reply:
        ch = self.channels.get(a.get("channel", ""))
        return {"ok": True, "channel": ch} if ch else {"ok": False, "error": "channel_not_found"}

    def m_conversations_list(self, a: dict[str, str]) -> Reply:
        return self._page(list(self.channels.values()), "channels", a)

    def m_conversations_history(self, a: dict[str, str]) -> Reply:
        cid = a.get("channel", "")
        if cid not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not self.channels[cid]["is_member"]:
            return {"ok": False, "error": "not_in_channel"}
        oldest = float(a.get("oldest") or 0)
        top = [m for m in self.messages[cid] if (not m.get("thread_ts") or m["thread_ts"] == m["ts"])
               and float(m["ts"]) > oldest]
        return self._page(sorted(top, key=lambda m: -float(m["ts"])), "messages", a)

    def m_conversations_replies(self, a: dict[str, str]) -> Reply:
        cid, ts = a.get("channel", ""), a.get("ts", "")
        if cid not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        msgs = [m for m in self.messages[cid] if m["ts"] == ts or m.get("thread_ts") == ts]
        if not any(m["ts"] == ts for m in msgs):
            return {"ok": False, "error": "thread_not_found"}
        return self._page(sorted(msgs, key=lambda m: float(m["ts"])), "messages", a)

    def m_chat_postMessage(self, a: dict[str, str]) -> Reply:
        cid = a.get("channel", "")
        if cid not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not a.get("text"):
            return {"ok": False, "error": "no_text"}
        self.posted.append(dict(a))
        msg = self.say(cid, BOT_USER, a["text"], thread_ts=a.get("thread_ts") or None, bot=True)
        return {"ok": True, "channel": cid, "ts": msg["ts"], "message": msg}

    def m_reactions_add(self, a: dict[str, str]) -> Reply:
        key = (a.get("channel", ""), a.get("timestamp", ""), a.get("name", ""))
        if key in self.reactions:
            return {"ok": False, "error": "already_reacted"}
        self.reactions.add(key)
        self.reaction_log.append(("add", *key))
        return {"ok": True}

    def m_reactions_remove(self, a: dict[str, str]) -> Reply:
        key = (a.get("channel", ""), a.get("timestamp", ""), a.get("name", ""))
        if key not in self.reactions:
            return {"ok": False, "error": "no_reaction"}
        self.reactions.discard(key)
        self.reaction_log.append(("remove", *key))
        return {"ok": True}


# --- wiring a test to the fake ---------------------------------------------------------------------


def serve(monkeypatch: pytest.MonkeyPatch, serve_fake: Any, **knobs: Any) -> FakeSlack:
    """Start the fake and point the plugin (and its app credentials) at it."""
    fake: FakeSlack = serve_fake(FakeSlack(**knobs))
    monkeypatch.setenv("HISSUNO_SLACK_API_URL", fake.url + "/api")
    monkeypatch.setenv("HISSUNO_SLACK_AUTH_URL", fake.url)
    monkeypatch.setenv("SLACK_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SLACK_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    for name in ("HISSUNO_LLM_BASE_URL", "HISSUNO_LLM_API_KEY", "OPENAI_API_KEY", "HISSUNO_SLACK_RESPONDER"):
        monkeypatch.delenv(name, raising=False)
    return fake


def connect(store: Any, fake: FakeSlack, *, user_id: str = "tester") -> dict[str, str]:
    """The real OAuth flow against the fake: authorize URL, consent, callback; the page query it ends on."""
    from hissuno_airflow.runtime.connect import finish_callback, start_connect

    started = start_connect("slack", {}, store, user_id=user_id, redirect_uri="http://127.0.0.1/callback")
    consent = httpx.get(started["authorize_url"], follow_redirects=False)
    assert consent.status_code == 302, consent.text
    query = dict(parse_qsl(urlsplit(consent.headers["location"]).query))
    return finish_callback("slack", query, store, user_id=user_id)


def seed_workspace(fake: FakeSlack, threads: int = 3) -> None:
    """A channel with ``threads`` threads, each started by an external customer and answered by staff."""
    fake.add_user("UCUST001", "Cora Customer", "cora@customer.example")
    fake.add_user("USTAFF01", "Sam Staff", "sam@acme.test")
    fake.add_channel("C0SUPPORT", "support")
    for n in range(threads):
        parent = fake.say("C0SUPPORT", "UCUST001", f"Question {n}: the export fails with error {n}")
        fake.say("C0SUPPORT", "USTAFF01", f"Looking into export problem {n}", thread_ts=parent["ts"])


def conformance(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> ConformanceTarget:
    """Three customer threads, connected through the real OAuth flow; the backfill captures them."""
    fake = serve(monkeypatch, serve_fake)
    seed_workspace(fake)
    page = connect(store, fake)
    assert page.get("connected") == "1", page
    return ConformanceTarget(connection_id=page["connection"], stream_ids=("events",))


def auth_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> AuthTarget:
    """A bot token the fake issued, and one the workspace revoked."""
    fake = serve(monkeypatch, serve_fake)
    good = fake.seed_tokens()
    bad = fake.seed_tokens()
    fake.revoke_token(bad["access_token"])
    return AuthTarget(good=good, bad=bad)


def webhook_target(store: Any, monkeypatch: pytest.MonkeyPatch, serve_fake: Any) -> WebhookTarget:
    """The static route with ``SLACK_SIGNING_SECRET``; each event is a message of the connected workspace."""
    fake = serve(monkeypatch, serve_fake)
    page = connect(store, fake)
    assert page.get("connected") == "1", page
    from hissuno_airflow.runtime.streams import enable_stream

    enable_stream(store, page["connection"], "events")
    signer = Signer(registry.get_plugin("slack").webhook_signature).with_secret(SIGNING_SECRET)

    def payload(event_id: str) -> dict[str, Any]:
        inner = {"type": "message", "channel": "C0OTHER", "user": "UCUST001", "text": "hello", "ts": "1.000001"}
        return fake.event(inner, event_id=event_id)

    return WebhookTarget(sign=signer, forge=signer.forged(), payload=payload)


def body(payload: Any) -> bytes:
    return jsonlib.dumps(payload).encode()


# --- a connected workspace for tests: deliver signed events through the real intake, drain the inbox --------


class Workspace:
    """A workspace connected through the real OAuth flow, its ``events`` stream enabled."""

    URL = "https://hissuno.invalid/hissuno/api/plugins/webhook/slack"

    def __init__(self, store: Any, fake: FakeSlack, *, settings: dict[str, Any] | None = None) -> None:
        from hissuno_airflow.runtime.streams import enable_stream

        self.store, self.fake = store, fake
        page = connect(store, fake)
        assert page.get("connected") == "1", page
        self.connection_id = page["connection"]
        enable_stream(store, self.connection_id, "events", settings=settings)
        self.signer = Signer(registry.get_plugin("slack").webhook_signature).with_secret(SIGNING_SECRET)

    def configure(self, **settings: Any) -> None:
        from hissuno_airflow.runtime.streams import enable_stream

        enable_stream(self.store, self.connection_id, "events", settings=settings)

    def delivery(self, payload: Any, *, timestamp: float | None = None, signer: Any = None) -> Any:
        return (signer or self.signer)(payload, url=self.URL, timestamp=timestamp)

    def post(self, payload: Any, *, timestamp: float | None = None, headers: dict[str, str] | None = None,
             signer: Any = None) -> Any:
        """The intake's answer to a signed delivery (events stay queued until ``drain``)."""
        from hissuno_airflow.runtime.webhooks import IntakeRequest, NullDispatcher, receive_webhook

        d = self.delivery(payload, timestamp=timestamp, signer=signer)
        return receive_webhook("slack", IntakeRequest("POST", d.url, {**d.headers, **(headers or {})}, d.body),
                               store=self.store, dispatcher=NullDispatcher())

    def drain(self) -> Any:
        from hissuno_airflow.runtime.webhooks import process_inbox

        return process_inbox(self.connection_id, "events", store=self.store)

    def send(self, inner: dict[str, Any]) -> Any:
        """Deliver one inner event and process it; the drain's result."""
        answer = self.post(self.fake.event(inner))
        assert answer.status == 200 and answer.body.get("queued") == 1, answer.body
        return self.drain()

    def say(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> dict[str, Any]:
        """A person writes in Slack; Slack sends the ``message`` event; it is processed."""
        msg = self.fake.say(channel, user, text, thread_ts=thread_ts)
        result = self.send(self.fake.message_event(msg, channel))
        assert result.failed == 0, result.errors
        return msg

    def mention(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> dict[str, Any]:
        """A person mentions the bot: Slack sends ``app_mention`` (and ``message`` when in a thread)."""
        msg = self.fake.say(channel, user, f"<@{BOT_USER}> {text}", thread_ts=thread_ts)
        result = self.send(self.fake.mention_event(msg, channel))
        assert result.failed == 0, result.errors
        return msg

    def session(self, channel: str, thread_ts: str) -> dict[str, Any] | None:
        """The thread's session row with its messages (None when never captured or deleted)."""
        ext = f"{TEAM_ID}:{channel}:{thread_ts}"
        with self.store.connection() as conn:
            row = conn.execute(
                "SELECT s.* FROM sessions s JOIN integration_synced_records r ON r.hissuno_id = s.id"
                " WHERE r.connection_id = %s AND r.external_id = %s AND s.deleted_at IS NULL",
                (self.connection_id, ext)).fetchone()
            if row is None:
                return None
            msgs = conn.execute("SELECT sender_type, sender_name, content FROM session_messages"
                                " WHERE session_id = %s ORDER BY position", (row["id"],)).fetchall()
        return {**row, "messages": msgs}

    def sessions(self) -> int:
        with self.store.connection() as conn:
            return int(conn.execute("SELECT count(*) AS n FROM sessions WHERE source = 'slack' AND deleted_at IS NULL"
                                    ).fetchone()["n"])

    def replies_in(self, thread_ts: str) -> list[str]:
        """Texts the bot posted in the thread."""
        return [p["text"] for p in self.fake.posted if p.get("thread_ts") == thread_ts]
