"""OAuth / app-install state tokens: encrypted, authenticated, expiring, single use, bound to a user."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from typing import Any

from ... import settings
from ...kit.errors import InputError
from ...store.db import Store

DEFAULT_STATE_TTL = 600


class StateError(InputError):
    """An OAuth/app-install state token is invalid, expired, replayed or for someone else."""

    code = "invalid_state"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"state: {reason.replace('_', ' ')}", field="state")


class UserMismatch(StateError):
    """The state was issued to a user and another one (or an anonymous request) presents it: 401."""

    code = "user_mismatch"
    http_status = 401

    def __init__(self) -> None:
        super().__init__("user_mismatch")


def _fernet() -> Any:
    from cryptography.fernet import Fernet

    key = base64.urlsafe_b64encode(hashlib.sha256(b"hissuno-oauth-state:" + settings.secret_key()).digest())
    return Fernet(key)


def state_ttl() -> int:
    """Lifetime of a state token in seconds (``HISSUNO_OAUTH_STATE_TTL``, default 600)."""
    try:
        return max(1, int(os.environ.get("HISSUNO_OAUTH_STATE_TTL", DEFAULT_STATE_TTL)))
    except ValueError:
        return DEFAULT_STATE_TTL


def issue_state(store: Store, data: Mapping[str, Any]) -> str:
    """Encrypt ``data`` (it may hold a PKCE verifier) with a fresh nonce recorded for single use."""
    nonce = secrets.token_urlsafe(18)
    ttl = state_ttl()
    with store.connection() as conn:
        conn.execute("DELETE FROM oauth_states WHERE expires_at < now() - interval '1 day'")
        conn.execute("INSERT INTO oauth_states (nonce, expires_at) VALUES (%s, now() + make_interval(secs => %s))",
                     (nonce, ttl))
    token: bytes = _fernet().encrypt(json.dumps({**data, "n": nonce}, separators=(",", ":")).encode())
    return token.decode()


def read_state(token: str) -> dict[str, Any]:
    """Decrypt and authenticate a state token, checking its age; no database access.

    Raises:
        StateError: invalid_state (tampered or foreign) or expired_state.
    """
    from cryptography.fernet import InvalidToken

    f = _fernet()
    try:
        raw = f.decrypt(token.encode())
    except (InvalidToken, ValueError, TypeError):
        raise StateError("invalid_state") from None
    try:
        f.decrypt(token.encode(), ttl=state_ttl())
    except InvalidToken:
        raise StateError("expired_state") from None
    data: dict[str, Any] = json.loads(raw)
    return data


def consume_state(store: Store, token: str) -> dict[str, Any]:
    """``read_state`` then mark its nonce used; a second use is ``replayed_state``."""
    data = read_state(token)
    with store.connection() as conn:
        cur = conn.execute(
            "UPDATE oauth_states SET used_at = now() WHERE nonce = %s AND used_at IS NULL AND expires_at > now()",
            (data.get("n"),),
        )
    if cur.rowcount != 1:
        raise StateError("replayed_state")
    return data
