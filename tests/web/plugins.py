"""Tiny test plugins and the stateful fake providers behind them (loopback HTTP only).

- ``webkey``: api_key auth whose ``test`` calls ``FakeKeyProvider`` (``GET /me`` with ``X-Api-Key``);
  a webhook stream ``events`` (connection-scoped URL) and a static URL resolved by ``team_id``.
- ``webauth``: oauth2 against ``FakeAuthServer`` (PKCE S256, comma-separated scopes, client_secret_basic).
- ``wh_<scheme>``: one plugin per built-in signature scheme, each with a webhook stream.

Base URLs point at 127.0.0.1 and are overridden per test with ``HISSUNO_<PLUGIN>_<NAME>_URL``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import httpx

from hissuno_airflow.kit import (
    ApiKeyAuth,
    AuthCtx,
    AuthResult,
    Field,
    Icon,
    OAuth2Auth,
    OAuthTokens,
    PluginUI,
    ProviderAuthError,
    Response,
    Stream,
    WebhookCtx,
    define_plugin,
)
from hissuno_airflow.kit import signatures as sig
from hissuno_airflow.kit.signatures import WebhookEvent
from tests.fakes.server import FakeProvider, FakeRequest, FakeResponse, Reply, get, post

# -- fake providers -------------------------------------------------------------------------------


class FakeKeyProvider(FakeProvider):
    """Accounts keyed by API key; ``/me`` answers 401 with a provider message for unknown keys."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, dict[str, str]] = {}

    def add_account(self, key: str, account_id: str, name: str) -> None:
        self.accounts[key] = {"id": account_id, "name": name}

    @get("/me")
    def me(self, req: FakeRequest) -> Reply:
        acct = self.accounts.get(req.header("x-api-key") or "")
        if acct is None:
            return 401, {"message": "Invalid API key"}
        return acct


class FakeAuthServer(FakeProvider):
    """An OAuth 2.0 authorization server: codes bound to client, redirect URI and PKCE challenge."""

    client_id = "web-client"
    client_secret = "web-client-secret-123"

    def __init__(self) -> None:
        super().__init__()
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}
        self.refresh_tokens: set[str] = set()
        self.refreshes = 0
        self.account = {"id": "org-42", "name": "Acme Org"}
        self.authorize_requests: list[dict[str, str]] = []
        self.deny: str | None = None  # set to an OAuth error (``access_denied``): the user refuses consent

    @get("/authorize")
    def authorize(self, req: FakeRequest) -> Reply:
        q = req.query
        self.authorize_requests.append(q)
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return 400, {"error": "invalid_request"}
        sep = "&" if "?" in q["redirect_uri"] else "?"
        if self.deny:
            return FakeResponse(302, headers={"Location": f"{q['redirect_uri']}{sep}error={self.deny}&state={q['state']}"})
        code = secrets.token_urlsafe(12)
        self.codes[code] = {"redirect_uri": q["redirect_uri"], "challenge": q.get("code_challenge"),
                            "method": q.get("code_challenge_method")}
        location = f"{q['redirect_uri']}{sep}code={code}&state={q['state']}"
        return FakeResponse(302, headers={"Location": location})

    @post("/token")
    def token(self, req: FakeRequest) -> Reply:
        basic = req.basic_auth
        if basic != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}
        form = dict(httpx.QueryParams(req.body.decode()))
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant"}
            self.refresh_tokens.discard(form["refresh_token"])  # rotation: a refresh token works once
            self.refreshes += 1
            return self._issue()
        grant = self.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant"}
        if grant["challenge"]:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != grant["challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        return self._issue()

    def _issue(self) -> Reply:
        access, refresh = "at-" + secrets.token_urlsafe(16), "rt-" + secrets.token_urlsafe(16)
        self.tokens[access] = self.account["id"]
        self.refresh_tokens.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": 3600,
                "token_type": "Bearer", "scope": "read,write"}

    @get("/api/me")
    def me(self, req: FakeRequest) -> Reply:
        if req.bearer_token not in self.tokens:
            return 401, {"error": "invalid_token"}
        return self.account


# -- plugins --------------------------------------------------------------------------------------


def _key_test(credentials: dict[str, Any], ctx: AuthCtx) -> AuthResult:
    resp = httpx.get(ctx.base_url("API") + "/me", headers={"X-Api-Key": str(credentials["api_key"])}, timeout=5)
    if resp.status_code == 401:
        raise ProviderAuthError(resp.json().get("message", "unauthorized"), provider="webkey", status=401)
    acct = resp.json()
    return AuthResult(external_account_id=acct["id"], account_label=acct["name"],
                      credentials={"api_key": credentials["api_key"]})


def _on_event(ctx: WebhookCtx) -> None:
    payload = ctx.payload or {}
    ctx.ingest.issue(external_id=str(payload.get("id") or ctx.event_id), name=str(payload.get("title") or "event"),
                     description=str(payload.get("body") or ""))
    if payload.get("fail"):
        raise RuntimeError(f"handler refused event {payload.get('id')}")


def _resolve(event: WebhookEvent, ctx: Any) -> Any:
    payload = event.payload if isinstance(event.payload, dict) else {}
    if payload.get("setup"):
        return Response(body={"ok": "setup"}, status=200)
    team = payload.get("team_id")
    return ctx.find_connections(str(team)) if team else None


def webkey_plugin(scheme: Any = None) -> Any:
    return define_plugin(
        id="webkey", name="Web Key", description="API-key test plugin", category="issues",
        icon=Icon(inline_svg="<svg xmlns='http://www.w3.org/2000/svg'/>"),
        base_urls={"API": "http://127.0.0.1:9/"},
        auth=ApiKeyAuth(fields=(Field(id="api_key", label="API key", secret=True, required=True),), test=_key_test),
        webhook_signature=scheme or sig.GitHubSignature(secret_env="WEBKEY_WEBHOOK_SECRET"),
        resolve_connection=_resolve,
        streams={"events": Stream(kind="issues", label="Events", webhook=_on_event)},
    )


def _on_tokens(tokens: OAuthTokens, ctx: AuthCtx) -> AuthResult:
    resp = httpx.get(ctx.base_url("API") + "/api/me", headers={"Authorization": f"Bearer {tokens.access_token}"},
                     timeout=5)
    resp.raise_for_status()
    acct = resp.json()
    return AuthResult(external_account_id=acct["id"], account_label=acct["name"])


def _whoami(request: Any, ctx: Any) -> Any:
    resp = httpx.get(ctx.base_url("API") + "/api/me", timeout=5,
                     headers={"Authorization": f"Bearer {ctx.credentials['access_token']}"})
    return Response(body=resp.json(), status=resp.status_code)


def webauth_plugin() -> Any:
    return define_plugin(
        id="webauth", name="Web Auth", description="OAuth test plugin", category="knowledge",
        icon=Icon(inline_svg="<svg xmlns='http://www.w3.org/2000/svg'/>"),
        base_urls={"API": "http://127.0.0.1:9", "AUTH": "http://127.0.0.1:9"},
        auth=OAuth2Auth(scopes=("read", "write"), authorize_url="{AUTH}/authorize", token_url="{AUTH}/token",
                        client_id_env="WEBAUTH_CLIENT_ID", client_secret_env="WEBAUTH_CLIENT_SECRET",
                        scope_separator=",", pkce=True, token_endpoint_auth_method="client_secret_basic",
                        extra_auth_params={"prompt": "consent"}, on_token_exchanged=_on_tokens),
        custom_handlers={"whoami": _whoami}, connection_handlers=frozenset({"whoami"}),
        streams={"events": Stream(kind="issues", label="Events", webhook=_on_event)},
    )


SCHEMES: dict[str, Any] = {
    "slack": sig.SlackSignature(),
    "github": sig.GitHubSignature(),
    "github_legacy": sig.GitHubSignature(),
    "standard": sig.StandardWebhooks(),
    "hubspot_v3": sig.HubSpotV3(),
    "hubspot_v1": sig.HubSpotV1(),
    "linear": sig.LinearSignature(),
    "zendesk": sig.ZendeskSignature(),
    "notion": sig.NotionSignature(),
    "intercom": sig.IntercomSignature(),
    "jira": sig.JiraSignature(),
    "shared": sig.SharedSecretHeader(header="X-Webhook-Secret"),
    "jwt": sig.JwtSignature(),
}


def scheme_plugin(name: str) -> Any:
    return define_plugin(
        id=f"wh-{name.replace('_', '-')}", name=f"Webhook {name}", description="signature test plugin",
        category="issues", icon=Icon(inline_svg="<svg xmlns='http://www.w3.org/2000/svg'/>"),
        auth=ApiKeyAuth(fields=(Field(id="api_key", label="API key", secret=True),), test=_key_test),
        webhook_signature=SCHEMES[name],
        streams={"events": Stream(kind="issues", label="Events", webhook=_on_event)},
    )


# -- github_app, custom, handlers -----------------------------------------------------------------


def _on_installation(installation_id: int, ctx: AuthCtx) -> AuthResult:
    return AuthResult(external_account_id=f"inst-{installation_id}", account_label=f"Installation {installation_id}",
                      credentials={"app": "webapp"})


def _setup_page(request: Any, ctx: Any) -> Any:
    return Response(body=f"<h1>Install the Web App</h1><p>reconnect: {request.query.get('connection_id', '-')}</p>",
                    headers={"Content-Type": "text/html; charset=utf-8"})


def webapp_plugin() -> Any:
    from hissuno_airflow.kit import GitHubAppAuth

    return define_plugin(
        id="webapp", name="Web App", description="GitHub App test plugin", category="issues",
        icon=Icon(), base_urls={"WEB": "http://127.0.0.1:9"},
        auth=GitHubAppAuth(app_slug_env="WEBAPP_SLUG", on_installation=_on_installation),
        custom_handlers={"setup": _setup_page}, ui=PluginUI(config_page="/api/plugins/webapp/setup"),
        streams={"events": Stream(kind="issues", label="Events", webhook=_on_event)},
    )


def _custom_connect(request: Any, ctx: AuthCtx) -> Any:
    body = request.json() or {}  # the plugin reads the untouched body itself
    if body.get("token"):
        return AuthResult(external_account_id=f"tok-{body['token'][:4]}", account_label="Direct token",
                          credentials={"token": body["token"]})
    state = ctx.sign_state({"workspace": body.get("workspace", "ws")})
    return {"authorize_url": f"/fake-provider/authorize?state={state}"}


def _custom_callback(request: Any, ctx: AuthCtx) -> Any:
    data = ctx.verify_state(request.query.get("state", ""))
    return AuthResult(external_account_id=f"ws-{data['workspace']}", account_label=f"Workspace {data['workspace']}",
                      credentials={"code": request.query.get("code", "")})


def _teams(request: Any, ctx: Any) -> Any:
    return {"teams": [{"id": "t1"}], "connection_id": ctx.connection_id, "query": dict(request.query),
            "has_credentials": bool(ctx.credentials)}


def _echo(request: Any, ctx: Any) -> Any:
    return Response(body={"method": request.method, "body": request.json()}, status=202)


def _boom(request: Any, ctx: Any) -> Any:
    raise RuntimeError("secret-value-xyz exploded")


# The plugin's own connect dialog (the ``ui.script`` escape hatch), served by one of its handlers.
UI_SCRIPT = """
export async function openConfigDialog({ plugin, api, onDone }) {
  const box = document.createElement("div");
  box.id = "webcustom-ui";
  box.textContent = "Own dialog of " + plugin.name + " ";
  const button = document.createElement("button");
  button.textContent = "Use token";
  button.onclick = async () => {
    await api(`/plugins/${plugin.id}/connect`, { json: { token: "ui-token-1" } });
    box.remove();
    await onDone();
  };
  box.append(button);
  document.body.append(box);
}
"""


def _ui_script(request: Any, ctx: Any) -> Any:
    return Response(body=UI_SCRIPT, headers={"Content-Type": "text/javascript"})


def webcustom_plugin() -> Any:
    from hissuno_airflow.kit import CustomAuth

    return define_plugin(
        id="webcustom", name="Web Custom", description="custom auth test plugin", category="knowledge",
        icon=Icon(), multi_instance=False,
        auth=CustomAuth(connect=_custom_connect, callback=_custom_callback),
        custom_handlers={"teams": _teams, "echo": _echo, "boom": _boom, "ui_script": _ui_script},
        ui=PluginUI(script="api/plugins/webcustom/ui_script"),
        connection_handlers=frozenset({"teams"}),
        streams={"events": Stream(kind="issues", label="Events", webhook=_on_event)},
    )
