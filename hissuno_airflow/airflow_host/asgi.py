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
        user = await _user_from_scope(scope)
        dag_id = _dag_tab_target(scope)
        if dag_id is not None:
            await _dag_tab(scope, send, dag_id, user)
            return
        wsgi = self._wsgi or self._build()
        await wsgi({**scope, "hissuno.user": user}, receive, send)


def _dag_tab_target(scope: Scope) -> str | None:
    """The DAG id of a ``GET <mount>/dag/<dag id>`` request (the DAG tab), else None."""
    from urllib.parse import unquote

    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if scope.get("method") not in ("GET", "HEAD") or not path.startswith("/dag/"):
        return None
    dag_id = unquote(path[len("/dag/"):]).strip("/")
    return dag_id if dag_id and "/" not in dag_id else None


async def _dag_tab(scope: Scope, send: Any, dag_id: str, user: str | None) -> None:
    """Serve the tab Airflow shows on each Hissuno DAG's page (signed-in Airflow users only)."""
    import asyncio

    from .dag_tab import render

    mount = scope.get("root_path", "") or "/hissuno"
    if user is None:
        status, html = 401, "<!doctype html><p>Sign in to Airflow to see this tab.</p>"
    else:
        def page() -> tuple[int, str]:
            from ..store.db import get_store

            return render(get_store(), dag_id, mount)

        try:
            status, html = await asyncio.to_thread(page)
        except Exception as exc:  # a store outage: say so, no stack trace to the browser
            log.warning("hissuno: the DAG tab of %s failed (%s)", dag_id, type(exc).__name__)
            status, html = 503, "<!doctype html><p>The Hissuno store cannot be reached right now; try again.</p>"
    body = html.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
