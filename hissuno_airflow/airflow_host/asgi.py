"""The ASGI face of the blueprint inside the Airflow API server.

``HissunoASGI`` is what the Airflow plugin mounts at ``/hissuno`` (``fastapi_apps``). It is built
empty at import (plugin modules are imported in every task process) and creates the Flask app and
the a2wsgi bridge on the first request. Before handing a request to Flask it verifies the caller's
Airflow JWT (``Authorization: Bearer`` first, then the UI's ``_token`` cookie) with Airflow's auth
manager and records the user name in the ASGI scope, where ``access.airflow_user`` reads it; a
header could be forged, the scope cannot.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("hissuno.web")
Scope = dict[str, Any]


async def _user_from_scope(scope: Scope) -> str | None:
    token: str | None = None
    cookie = ""
    for k, v in scope.get("headers", []):
        name = k.decode("latin1").lower()
        if name == "authorization":
            val = v.decode("latin1")
            if val.lower().startswith("bearer "):
                token = val[7:].strip()
        elif name == "cookie":
            cookie = v.decode("latin1")
    if token is None and cookie:
        from http.cookies import SimpleCookie

        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except Exception:
            jar = SimpleCookie()
        if "_token" in jar:
            token = jar["_token"].value
    if not token:
        return None
    try:
        from airflow.api_fastapi.app import get_auth_manager

        user = await get_auth_manager().get_user_from_token(token)
    except Exception as exc:
        log.info("hissuno: rejected an Airflow token (%s)", type(exc).__name__)
        return None
    name = user.get_name() if hasattr(user, "get_name") else getattr(user, "username", None)
    return str(name) if name else None


def _migrate_connection_types() -> None:
    """Connections of the earlier ``hissuno_<plugin>`` types get today's types, once per API server."""
    from .credentials import migrate_legacy_connections

    try:
        changed = migrate_legacy_connections()
    except Exception as exc:  # never keep the page from loading; the old types are still read
        log.warning("hissuno: could not migrate Airflow connection types (%s)", type(exc).__name__)
        return
    if changed:
        log.info("hissuno: %d Airflow connection(s) moved to the hissuno<plugin> connection types", changed)


class HissunoASGI:
    """Lazily built ASGI app: Airflow user resolution + a2wsgi + the Flask blueprint."""

    def __init__(self) -> None:
        self._wsgi: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._wsgi is None:
                from a2wsgi import WSGIMiddleware

                from ..runtime.webhooks import HostDispatcher, set_default_dispatcher
                from ..web import access
                from ..web.app import create_app
                from .host import install

                install()
                _migrate_connection_types()
                dispatcher = HostDispatcher()
                set_default_dispatcher(dispatcher)
                app = create_app(authenticate=access.airflow_user, dispatcher=dispatcher)
                self._wsgi = WSGIMiddleware(app, workers=16)  # type: ignore[arg-type]
        return self._wsgi

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        wsgi = self._wsgi or self._build()
        user = await _user_from_scope(scope)
        await wsgi({**scope, "hissuno.user": user}, receive, send)
