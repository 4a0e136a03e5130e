"""Who is calling: Airflow's JWT (resolved by the ASGI wrapper) or ``hissuno serve``'s admin token.

Public endpoints (webhooks, OAuth/app-install return legs, health, the page shell and its static
files) are listed by endpoint name; every other route answers 401 without an identity.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from flask import Request, current_app, g, request

from ..kit.errors import HissunoError

PUBLIC_ENDPOINTS = frozenset({
    "hissuno.health", "hissuno.index", "hissuno.webhook_static", "hissuno.webhook_connection",
    "hissuno.oauth_callback", "hissuno.custom_callback", "hissuno.static",
})
ADMIN_COOKIE = "hissuno_token"


class Unauthorized(HissunoError):
    """No valid identity on a route that needs one."""

    code = "unauthorized"
    http_status = 401


Authenticator = Callable[[Request], "str | None"]


def airflow_user(req: Request) -> str | None:
    """The Airflow user name the ASGI wrapper verified for this request (never taken from a header)."""
    scope = req.environ.get("asgi.scope") or {}
    user = scope.get("hissuno.user")
    return str(user) if user else None


def admin_token_user(token: str) -> Authenticator:
    """Accept ``Authorization: Bearer <token>`` or the ``hissuno_token`` cookie (constant-time compare)."""
    expected = token.encode()

    def check(req: Request) -> str | None:
        auth = req.headers.get("Authorization", "")
        sent = auth[7:].strip() if auth.lower().startswith("bearer ") else req.cookies.get(ADMIN_COOKIE, "")
        if sent and hmac.compare_digest(sent.encode(), expected):
            return "admin"
        return None

    return check


def env_admin_token() -> str | None:
    """``HISSUNO_ADMIN_TOKEN`` when set."""
    return os.environ.get("HISSUNO_ADMIN_TOKEN") or None


def current_user() -> str | None:
    """The identity of this request (cached on ``g``)."""
    if "hissuno_user" not in g:
        auth: Authenticator = current_app.config["HISSUNO_AUTHENTICATE"]
        g.hissuno_user = auth(request)
    return g.hissuno_user  # type: ignore[no-any-return]


def require_user() -> None:
    """``before_request`` hook: 401 on non-public endpoints without an identity."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    if current_user() is None:
        raise Unauthorized("authentication required: log in to Airflow (or send the admin token)")
