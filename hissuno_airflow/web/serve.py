"""``hissuno serve``: the same blueprint without Airflow, on a threaded WSGI server (development, tests).

Management routes accept ``Authorization: Bearer $HISSUNO_ADMIN_TOKEN`` (or the ``hissuno_token``
cookie the page sets). When the variable is unset a random token is generated and printed once.
Webhook events are processed in-process; manual syncs run in a worker thread.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from flask import Flask, redirect
from werkzeug.serving import BaseWSGIServer, make_server

from ..store.db import Store
from . import access
from .app import create_app

log = logging.getLogger("hissuno.web")
MOUNT = "/hissuno"


def build_app(*, token: str, store: Store | None = None, dispatcher: Any = None) -> Flask:
    """The serve-mode app: blueprint at ``/hissuno``, ``/`` redirects there."""
    from ..runtime.webhooks import InProcessDispatcher, set_default_dispatcher

    if dispatcher is None:
        dispatcher = InProcessDispatcher(store)
        set_default_dispatcher(dispatcher)
    app = create_app(authenticate=access.admin_token_user(token), store=store,
                     dispatcher=dispatcher, url_prefix=MOUNT)
    app.add_url_rule("/", "root", lambda: redirect(MOUNT + "/"))
    return app


class Server:
    """A running serve-mode server (tests start one per module on 127.0.0.1)."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.httpd: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self.httpd.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the blueprint mount."""
        return f"http://{self.host}:{self.port}{MOUNT}"

    def start(self) -> Server:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hissuno-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)


def main(host: str = "127.0.0.1", port: int = 8321) -> None:
    """Run ``hissuno serve`` in the foreground until interrupted."""
    token = access.env_admin_token()
    if token is None:
        token = secrets.token_urlsafe(24)
        print(f"HISSUNO_ADMIN_TOKEN is not set; this run's admin token: {token}")
    from ..store.db import get_store
    from ..store.sealed import check_secret_key

    store = get_store()
    store.migrate()  # idempotent; a first `hissuno serve` should not need a separate `db migrate`
    check_secret_key(store)  # a replica with a key of its own could open nothing the others sealed
    app = build_app(token=token, store=store)
    server = Server(app, host, port)
    print(f"hissuno: serving on http://{host}:{server.port}{MOUNT}/ (open it, paste the token)")
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
