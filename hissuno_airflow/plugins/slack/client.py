"""Slack's Web API as named methods (providers.md section 1), composing the runtime's ``ProviderClient``.

Every method answers HTTP 200 with ``{"ok": false, "error": "<code>"}`` on failure, so the status code says
nothing: each answer's ``ok`` is checked here. A dead token (``invalid_auth``, ``token_revoked``,
``account_inactive`` ...) is a ``ProviderAuthError``, which marks the connection "reconnect needed"; any
other refusal is a ``ProviderResponseError`` naming the method and Slack's code. 429 with ``Retry-After``
and the retries are the runtime's; nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hissuno_airflow.kit import ProviderAuthError, ProviderResponseError
from hissuno_airflow.kit.http import ProviderClient

AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
                         "app_uninstalled", "org_login_required", "ekm_access_denied"})
"""Slack error codes that mean the stored token no longer works."""

PAGE_LIMIT = 200


class SlackApiError(ProviderResponseError):
    """Slack answered ``ok: false`` with a code that is not about the token."""

    def __init__(self, method: str, error: str) -> None:
        self.error = error
        super().__init__(f"slack {method}: {error}", provider="slack")


class SlackClient:
    """The Web API methods the plugin uses."""

    def __init__(self, http: ProviderClient) -> None:
        self.http = http
        self._users: dict[str, dict[str, Any]] = {}

    def call(self, method: str, *, post: bool = False, **params: Any) -> dict[str, Any]:
        """One Web API call; the answer when ``ok``, else an error naming the method and Slack's code."""
        args = {k: v for k, v in params.items() if v is not None}
        resp = self.http.post(f"/{method}", json=args) if post else self.http.get(f"/{method}", params=args)
        body = self.http.parse_json(resp)
        if not isinstance(body, dict):
            raise ProviderResponseError(f"slack {method}: expected a JSON object", provider="slack")
        if body.get("ok") is True:
            return body
        error = str(body.get("error") or "unknown_error")
        if error in AUTH_ERRORS:
            raise ProviderAuthError(f"slack {method}: {error}; reconnect needed", provider="slack", status=401)
        raise SlackApiError(method, error)

    def _pages(self, method: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            body = self.call(method, limit=PAGE_LIMIT, cursor=cursor, **params)
            for item in body.get(key) or []:
                if isinstance(item, dict):
                    yield item
            meta = body.get("response_metadata")
            cursor = str(meta.get("next_cursor") or "") if isinstance(meta, dict) else ""
            if not cursor:  # "" marks the last page
                return

    def auth_test(self) -> dict[str, Any]:
        """``auth.test``: team id and name, bot user id of the token."""
        return self.call("auth.test")

    def user(self, user_id: str) -> dict[str, Any]:
        """``users.info`` (cached per client): name and, with ``users:read.email``, the email."""
        if user_id not in self._users:
            try:
                found = self.call("users.info", user=user_id).get("user")
            except SlackApiError as exc:
                if exc.error not in ("user_not_found", "user_not_visible"):
                    raise
                found = None
            self._users[user_id] = found if isinstance(found, dict) else {"id": user_id}
        return self._users[user_id]

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """``conversations.replies``: the parent then every reply, oldest first; [] when the thread is gone."""
        try:
            return list(self._pages("conversations.replies", "messages", channel=channel, ts=thread_ts))
        except SlackApiError as exc:
            if exc.error in ("thread_not_found", "message_not_found"):
                return []
            raise

    def history(self, channel: str, oldest: str | None = None) -> Iterator[dict[str, Any]]:
        """``conversations.history``: top-level messages and thread parents, newest first."""
        return self._pages("conversations.history", "messages", channel=channel, oldest=oldest)

    def channels(self) -> Iterator[dict[str, Any]]:
        """``conversations.list``: public and private channels the app can see."""
        return self._pages("conversations.list", "channels", types="public_channel,private_channel",
                           exclude_archived="true")

    def channel(self, channel_id: str) -> dict[str, Any]:
        """``conversations.info``: a channel's name and privacy; {} when Slack does not show it."""
        try:
            found = self.call("conversations.info", channel=channel_id).get("channel")
        except SlackApiError:
            return {}
        return found if isinstance(found, dict) else {}

    def post_message(self, channel: str, thread_ts: str, text: str) -> str:
        """``chat.postMessage`` in a thread; returns the new message's ts."""
        body = self.call("chat.postMessage", post=True, channel=channel, thread_ts=thread_ts, text=text)
        return str(body.get("ts") or "")

    def react(self, channel: str, ts: str, name: str) -> None:
        """``reactions.add``; an existing reaction is fine."""
        try:
            self.call("reactions.add", post=True, channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            if exc.error != "already_reacted":
                raise

    def unreact(self, channel: str, ts: str, name: str) -> None:
        """``reactions.remove``; a missing reaction is fine."""
        try:
            self.call("reactions.remove", post=True, channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            if exc.error != "no_reaction":
                raise
