"""The command line's return leg for ``oauth2``: a one-time listener on the loopback interface.

The way ``gh auth login`` and ``gcloud auth login`` do it (RFC 8252, OAuth 2.0 for native apps): the
authorize URL's ``redirect_uri`` is ``http://127.0.0.1:<port>/callback``; after the user consents the
provider sends the browser there, the listener takes that one request, finishes the connection through
the same ``finish_callback`` as the web route (state checked and consumed, PKCE verifier sent with the
code), answers the browser with a short page and closes. Requests to any other path (a browser's
``/favicon.ico``) answer 404 and do not count. No request within the timeout is an error.

Providers must allow a loopback redirect for the app: ``http://127.0.0.1`` with any port (RFC 8252
§7.3), or, for providers that match the port exactly, the fixed port given with ``--port``.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ...kit.errors import HissunoError, InputError

CALLBACK_PATH = "/callback"
DEFAULT_TIMEOUT = 300.0

Finish = Callable[[Mapping[str, str]], Mapping[str, str]]


class LoopbackTimeout(HissunoError):
    """No redirect reached the loopback listener in time."""

    code = "timeout"
    http_status = 504


class _Server(HTTPServer):
    finish: Finish | None = None
    outcome: dict[str, str] | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 15  # a client that connects and sends nothing cannot hold the listener

    def log_message(self, *args: Any) -> None:  # the query carries the code: never log it
        pass

    def _page(self, status: int, title: str, text: str) -> None:
        body = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH or self.server.outcome is not None or self.server.finish is None:
            self._page(404, "Not found", "This is the hissuno command line's one-time OAuth listener.")
            return
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(key, value)
        outcome = dict(self.server.finish(query))
        self.server.outcome = outcome
        if outcome.get("error"):
            self._page(400, "Connecting failed", f"{outcome['error']}: see the terminal; nothing was saved.")
        else:
            self._page(200, "Connected", "You can close this tab and return to the terminal.")


class LoopbackListener:
    """A listener on ``127.0.0.1:port`` (0: a free port the system picks) for exactly one redirect.

    Bound at construction, so ``redirect_uri`` is known before the authorize URL is built; use it as a
    context manager so the socket closes on every path.
    """

    def __init__(self, port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise InputError(f"--port: expected 0..65535; got {port}", field="--port")
        try:
            self._server = _Server(("127.0.0.1", port), _Handler)
        except OSError as exc:
            raise InputError(f"--port: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})",
                             field="--port") from None
        self.port: int = self._server.server_address[1]
        self._closed = threading.Event()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    def wait(self, finish: Finish, timeout: float = DEFAULT_TIMEOUT) -> dict[str, str]:
        """Serve until one request reached the callback path (``finish`` answers it) or ``timeout``.

        Returns what ``finish`` returned; closes the socket either way.

        Raises:
            LoopbackTimeout: nothing arrived in time.
        """
        self._server.finish = finish
        deadline = time.monotonic() + timeout
        try:
            while self._server.outcome is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LoopbackTimeout(
                        f"no redirect reached {self.redirect_uri} within {timeout:g} s; nothing was saved "
                        "(run the command again, with --timeout to wait longer)")
                self._server.timeout = remaining
                self._server.handle_request()
            return self._server.outcome
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._server.server_close()

    def __enter__(self) -> LoopbackListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
