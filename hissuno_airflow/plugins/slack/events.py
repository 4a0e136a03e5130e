"""The ``events`` stream: Slack Events API deliveries, processed after Slack got its answer.

The shared webhook intake verifies the signature (5-minute window), answers ``url_verification`` inline,
stores each ``event_id`` once (Slack's retries, marked ``X-Slack-Retry-Num``, carry the same id and are
no-ops) and answers 200 at once; this handler runs afterwards from the stream's inbox, one event at a time
in arrival order. A thread is one session keyed by workspace, channel and thread ts, re-read through
``conversations.replies`` whenever one of its messages arrives, changes or is deleted, so the session always
equals the thread. The bot answers per ``decide.py``: ``eyes`` on the message, the reply in the thread, then
``white_check_mark`` in place of ``eyes``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from hissuno_airflow.kit import ProviderAuthError, SyncCtx, WebhookCtx

from .client import SlackClient
from .decide import bot_took_part, decide, is_bot, mentions
from .mapping import (
    Author,
    author_from_user,
    contact_fields,
    conversation,
    readable,
    session_fields,
    slack_time,
    thread_external_id,
    ts_key,
)
from .responder import ResponderInput, current_responder, should_respond
from .settings import EventSettings

APOLOGY = "Sorry, I couldn't put an answer together just now. Someone from the team will follow up here."


def _str(value: Any) -> str:
    return str(value) if value is not None else ""


class Thread:
    """One thread being handled: its messages, authors and channel configuration."""

    def __init__(self, handler: EventHandler, channel: str, thread_ts: str) -> None:
        self.h = handler
        self.channel = channel
        self.thread_ts = thread_ts
        self.messages: list[Mapping[str, Any]] = list(handler.slack.replies(channel, thread_ts))

    @property
    def external_id(self) -> str:
        return thread_external_id(self.h.team_id, self.channel, self.thread_ts)

    def reload(self) -> None:
        self.messages = list(self.h.slack.replies(self.channel, self.thread_ts))

    def authors(self) -> dict[str, Author]:
        ids = {_str(m.get("user")) for m in self.messages if not is_bot(m, self.h.bot_user_id)}
        for m in self.messages:
            ids |= mentions(_str(m.get("text")))
        ids.discard("")
        ids.discard(self.h.bot_user_id)
        return {uid: author_from_user(self.h.slack.user(uid), self.h.internal_domains) for uid in sorted(ids)}

    def has_external(self) -> bool:
        authors = self.authors()
        return any(authors[_str(m.get("user"))].external for m in self.messages
                   if _str(m.get("user")) in authors and not is_bot(m, self.h.bot_user_id))

    def capture(self) -> str | None:
        """Ingest the thread as its session (and its external authors as contacts); the session's id."""
        if not conversation(self.messages):
            return None
        authors = self.authors()
        for author in authors.values():
            fields = contact_fields(author)
            if fields is not None:
                self.h.ctx.ingest.contact(**fields)
        name = self.h.channel_name(self.channel)
        result = self.h.ctx.ingest.session(**session_fields(
            team_id=self.h.team_id, channel_id=self.channel, channel_name=name, thread_ts=self.thread_ts,
            thread=self.messages, authors=authors, bot_user_id=self.h.bot_user_id))
        return result.id


class EventHandler:
    """Handles one ``event_callback`` for a connection."""

    def __init__(self, ctx: WebhookCtx | SyncCtx, slack: SlackClient, team_id: str) -> None:
        self.ctx = ctx
        self.slack = slack
        self.team_id = team_id
        creds = ctx.credentials
        self.bot_user_id = _str(creds.get("bot_user_id"))
        settings = ctx.settings if isinstance(ctx.settings, EventSettings) else EventSettings.model_validate(
            dict(ctx.settings or {}))
        self.settings = settings
        own = _str(creds.get("primary_domain"))
        self.internal_domains = [d for d in [own, *settings.internal_domains] if d]
        self._names: dict[str, str | None] = {}

    def channel_name(self, channel_id: str) -> str | None:
        if channel_id not in self._names:
            self._names[channel_id] = _str(self.slack.channel(channel_id).get("name")) or None
        return self._names[channel_id]

    # -- events ----------------------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "app_mention":
            self.on_mention(event)
        elif kind == "message":
            self.on_message(event)
        elif kind == "app_uninstalled" or (kind == "tokens_revoked" and _revoked_bot(event)):
            raise ProviderAuthError(f"slack: {kind}: the app's bot token no longer works; reconnect needed",
                                    provider="slack", status=401)

    def on_mention(self, event: Mapping[str, Any]) -> None:
        """``@bot`` anywhere: passive channels capture, interactive ones answer (thread = the message's)."""
        if is_bot(event, self.bot_user_id):
            return
        channel, ts = _str(event.get("channel")), _str(event.get("ts"))
        thread = Thread(self, channel, _str(event.get("thread_ts")) or ts)
        if not thread.messages:
            thread.messages = [event]
        if self.settings.channel(channel).mode == "passive":
            thread.capture()
            return
        earlier = [m for m in thread.messages if ts_key(m.get("ts")) < ts_key(ts)]
        verdict = decide(_str(event.get("text")), earlier, self.bot_user_id, lambda: True)
        thread.capture()
        if verdict.respond:
            self.respond(thread, event)

    def on_message(self, event: Mapping[str, Any]) -> None:
        subtype = event.get("subtype")
        if subtype in ("message_changed", "message_deleted"):
            self.on_change(event)
            return
        if subtype not in (None, "thread_broadcast", "file_share") or is_bot(event, self.bot_user_id):
            return
        thread_ts, ts = _str(event.get("thread_ts")), _str(event.get("ts"))
        if not thread_ts or event.get("channel_type") == "im":
            return  # top-level channel messages are not captured; DMs are not threads of a channel
        channel = _str(event.get("channel"))
        thread = Thread(self, channel, thread_ts)
        if not any(_str(m.get("ts")) == ts for m in thread.messages):
            thread.messages = [*thread.messages, event]
        cfg = self.settings.channel(channel)
        earlier = [m for m in thread.messages if ts_key(m.get("ts")) < ts_key(ts)]
        text = _str(event.get("text"))
        tracked = bot_took_part(earlier, self.bot_user_id) or self.bot_user_id in mentions(text)
        if cfg.mode == "passive" or not tracked:
            # Capture only: every thread when the scope is ``all``, else threads with an external author.
            if (cfg.mode == "passive" and cfg.capture_scope == "all") or thread.has_external():
                thread.capture()
            return
        history = self._roles(thread, earlier)
        verdict = decide(text, earlier, self.bot_user_id, lambda: should_respond(history, text))
        self.ctx.logger.info(f"slack: {verdict.reason} -> {'respond' if verdict.respond else 'skip'}")
        thread.capture()
        if verdict.respond:
            self.respond(thread, event)

    def on_change(self, event: Mapping[str, Any]) -> None:
        """An edit or a deletion re-reads its thread: the session follows (a thread gone: the session too)."""
        new = event.get("message") if isinstance(event.get("message"), Mapping) else {}
        old = event.get("previous_message") if isinstance(event.get("previous_message"), Mapping) else {}
        assert isinstance(new, Mapping) and isinstance(old, Mapping)
        thread_ts = _str(new.get("thread_ts") or old.get("thread_ts"))
        channel = _str(event.get("channel"))
        if not thread_ts or not channel:
            return
        external_id = thread_external_id(self.team_id, channel, thread_ts)
        if not self.ctx.is_synced(external_id):
            return  # a thread never captured stays uncaptured
        thread = Thread(self, channel, thread_ts)
        if conversation(thread.messages):
            thread.capture()
        else:
            self.ctx.ingest.delete("sessions", external_id)

    # -- answering -------------------------------------------------------------------------------

    def _roles(self, thread: Thread, messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
        authors = thread.authors()
        out = []
        for m in conversation(messages):
            text = readable(_str(m.get("text")), authors, self.bot_user_id)
            if text:
                out.append(("assistant" if is_bot(m, self.bot_user_id) else "user", text))
        return out

    def respond(self, thread: Thread, event: Mapping[str, Any]) -> None:
        """``eyes``, the responder's reply in the thread, then ``white_check_mark`` instead of ``eyes``."""
        ts = _str(event.get("ts"))
        if any(is_bot(m, self.bot_user_id) and ts_key(m.get("ts")) > ts_key(ts) for m in thread.messages):
            return  # answered already (the same message as app_mention and as message, or a retried event)
        channel = thread.channel
        self.slack.react(channel, ts, "eyes")
        session_id = thread.capture()
        authors = thread.authors()
        author = authors.get(_str(event.get("user")))
        # Hissuno has no session page of its own: an operator with one names it by a template.
        template = os.environ.get("HISSUNO_SLACK_SESSION_URL", "").strip()
        inp = ResponderInput(
            question=readable(_str(event.get("text")), authors, self.bot_user_id),
            thread=self._roles(thread, [m for m in thread.messages if ts_key(m.get("ts")) <= ts_key(ts)]),
            session_id=session_id, session_url=template.replace("{session_id}", session_id) if template and session_id else None,
            author_name=author.name if author else None, author_email=author.email if author else None,
            external=bool(author and author.external), search=getattr(self.ctx, "search_knowledge", lambda q, n: []),
        )
        try:
            reply = current_responder()(inp)
        except Exception as exc:
            self.ctx.logger.warning(f"slack: the responder failed ({type(exc).__name__}); apologising")
            self.slack.unreact(channel, ts, "eyes")
            self.slack.post_message(channel, thread.thread_ts, APOLOGY)
            thread.reload()
            thread.capture()
            return
        if reply:
            self.slack.post_message(channel, thread.thread_ts, reply)
        self.slack.unreact(channel, ts, "eyes")
        self.slack.react(channel, ts, "white_check_mark")
        thread.reload()
        thread.capture()


def _revoked_bot(event: Mapping[str, Any]) -> bool:
    tokens = event.get("tokens")
    return isinstance(tokens, Mapping) and bool(tokens.get("bot"))


def on_event(ctx: WebhookCtx) -> None:
    """The ``events`` stream's webhook handler (one stored delivery)."""
    payload = ctx.payload
    if not isinstance(payload, Mapping) or payload.get("type") != "event_callback":
        return
    event = payload.get("event")
    if not isinstance(event, Mapping):
        return
    team_id = _str(payload.get("team_id") or event.get("team") or ctx.credentials.get("team_id"))
    with ctx.http_client("API") as http:
        EventHandler(ctx, SlackClient(http), team_id).handle(event)


def sync_threads(ctx: SyncCtx) -> None:
    """Manual backfill: threads of the channels the bot is in, captured by the same rules as live events.

    Incremental runs read thread parents posted since the last run (``oldest``); replies to older threads
    arrive through events.
    """
    since = ctx.since()
    oldest = f"{since.timestamp():.6f}" if since is not None else None
    with ctx.http_client("API") as http:
        slack = SlackClient(http)
        team_id = _str(ctx.credentials.get("team_id")) or _str(slack.auth_test().get("team_id"))
        handler = EventHandler(ctx, slack, team_id)
        for channel in slack.channels():
            if not channel.get("is_member"):
                continue
            cid = _str(channel.get("id"))
            handler._names[cid] = _str(channel.get("name")) or None
            cfg = handler.settings.channel(cid)
            for parent in slack.history(cid, oldest):
                ctx.signal.raise_if_cancelled()
                if not parent.get("reply_count") or is_bot(parent, handler.bot_user_id):
                    continue
                thread = Thread(handler, cid, _str(parent.get("thread_ts") or parent.get("ts")))
                ctx.progress("found", external_id=thread.external_id)
                capture = (bot_took_part(thread.messages, handler.bot_user_id) and cfg.mode == "interactive") or (
                    cfg.mode == "passive" and cfg.capture_scope == "all") or thread.has_external()
                if capture:
                    thread.capture()
                else:
                    ctx.progress("skipped", external_id=thread.external_id, message="no external participant")
                    seen = slack_time(parent.get("latest_reply") or parent.get("ts"))
                    if seen is not None:
                        ctx.advance_cursor(seen)  # read and left out: the next incremental run starts after it
