"""``afoauth``: an OAuth 2.0 test plugin plus a fake token endpoint that rotates refresh tokens.

The fake runs on 127.0.0.1 in the test process. Each refresh answers a new access token *and* a new
refresh token, and a refresh token that was used once is rejected with ``invalid_grant``, as
providers with rotation do. ``GET /me`` accepts only the newest access token.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from hissuno_airflow.kit import define_plugin
from hissuno_airflow.kit.auth import AuthResult, OAuth2Auth
from hissuno_airflow.kit.streams import Stream

CLIENT_ID, CLIENT_SECRET = "afoauth-client", "afoauth-client-secret"


def _exchanged(tokens: Any, ctx: Any) -> AuthResult:
    return AuthResult(external_account_id="o-1", account_label="OAuth Probe")


def _sync_me(ctx: Any) -> None:
    """Calls the provider with the access token it was given: a revoked one gets a 401."""
    from hissuno_airflow.kit.http.auth import BearerAuth

    with ctx.http_client("AUTH", auth=BearerAuth(ctx.credentials["access_token"])) as client:
        client.get_json("/me")
    ctx.ingest.issue(external_id="me", name="Reached the API")


plugin = define_plugin(
    id="afoauth", name="OAuth Probe", description="OAuth test plugin.", category="issues",
    icon={"src": "/x.svg"}, base_urls={"AUTH": "https://auth.invalid"},
    auth=OAuth2Auth(authorize_url="{AUTH}/authorize", token_url="{AUTH}/oauth/token",
                    client_id_env="AFOAUTH_CLIENT_ID", client_secret_env="AFOAUTH_CLIENT_SECRET",
                    on_token_exchanged=_exchanged),
    streams={"items": Stream(kind="issues", label="Items", sync=lambda ctx: None),
             "me": Stream(kind="issues", label="Me", sync=_sync_me)},
)


class TokenServer:
    """The fake provider: token endpoint with rotation, and an API that checks the access token."""

    def __init__(self, refresh_token: str) -> None:
        self.lock = threading.Lock()
        self.valid_refresh = refresh_token
        self.used: set[str] = set()
        self.access = "expired-access"
        self.refresh_requests = 0
        self.rejected = 0
        self.deny_api = False  # the API refuses every token (an app uninstalled, a scope removed)
        self.n = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
                with outer.lock:
                    outer.refresh_requests += 1
                    if (form.get("grant_type") != "refresh_token" or form.get("client_id") != CLIENT_ID
                            or form.get("client_secret") != CLIENT_SECRET):
                        return self._send(401, {"error": "invalid_client"})
                    token = form.get("refresh_token", "")
                    if token != outer.valid_refresh or token in outer.used:
                        outer.rejected += 1
                        return self._send(400, {"error": "invalid_grant"})
                    outer.used.add(token)
                    outer.n += 1
                    outer.access = f"access-{outer.n}"
                    outer.valid_refresh = f"refresh-{outer.n}"
                    return self._send(200, {"access_token": outer.access, "refresh_token": outer.valid_refresh,
                                            "token_type": "Bearer", "expires_in": 3600})

            def do_GET(self) -> None:
                ok = not outer.deny_api and self.headers.get("Authorization") == f"Bearer {outer.access}"
                self._send(200 if ok else 401, {"ok": ok})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
