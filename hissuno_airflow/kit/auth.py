"""Auth schemas: how a user connects a provider account (``api_key``, ``oauth2``, ``github_app``, ``custom``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class Field(_Frozen):
    """One form field of an ``api_key`` (or custom) connect dialog."""

    id: str = PField(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    """Key inside the credentials map."""
    label: str
    """Label shown in forms."""
    placeholder: str | None = None
    """Placeholder text."""
    secret: bool = False
    """Masked in forms, never shown again, redacted everywhere."""
    required: bool = False
    """The connect flow refuses a blank value."""
    help_text: str | None = None
    """One line of help under the field."""
    pattern: str | None = None
    """Regular expression a value must match (checked server-side too)."""


class AuthResult(_Frozen):
    """What ``test``, ``on_token_exchanged`` and ``on_installation`` return."""

    external_account_id: str = PField(min_length=1)
    """Stable provider id of the account; unique per (project, plugin)."""
    account_label: str = PField(min_length=1)
    """Human label of the account."""
    credentials: dict[str, Any] = PField(default_factory=dict)
    """What to persist (encrypted) for later syncs."""
    settings: dict[str, Any] | None = None
    """Initial connection-level settings (non-secret)."""


AuthHandler = Callable[..., Any]
"""A plain or ``async`` function; see each schema for its arguments."""


class ApiKeyAuth(_Frozen):
    """Manual-entry credentials verified by ``test(credentials, ctx) -> AuthResult``."""

    type: Literal["api_key"] = "api_key"
    fields: tuple[Field, ...]
    """The form fields; their ids become credential keys."""
    test: AuthHandler
    """Call the provider, raise on bad credentials, return an AuthResult."""


class OAuth2Auth(_Frozen):
    """OAuth 2.0 authorization-code flow, with refresh, run by the shared runtime through authlib."""

    type: Literal["oauth2"] = "oauth2"
    scopes: tuple[str, ...] = ()
    """Scopes to request."""
    authorize_url: str
    """Authorize endpoint; may start with a named base, e.g. ``{AUTH}/oauth/authorize``."""
    token_url: str
    """Token endpoint; may start with a named base, e.g. ``{API}/oauth/token``."""
    client_id_env: str
    """Name of the environment variable holding the client id."""
    client_secret_env: str
    """Name of the environment variable holding the client secret."""
    extra_auth_params: dict[str, str] = PField(default_factory=dict)
    """Added to the authorize URL."""
    extra_token_params: dict[str, str] = PField(default_factory=dict)
    """Added to code-exchange and refresh bodies."""
    scope_separator: str = " "
    """How scopes are joined (Linear and HubSpot differ from the standard space)."""
    pkce: bool = False
    """Send a PKCE S256 challenge."""
    token_endpoint_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"
    """How the client authenticates at the token endpoint."""
    token_body: Literal["form", "json"] = "form"
    """How the code-exchange and refresh requests carry their parameters: ``"form"`` is the standard
    ``application/x-www-form-urlencoded`` body (RFC 6749); ``"json"`` sends them as one JSON object with
    ``Content-Type: application/json`` (Atlassian), the client id and secret inside it under
    ``client_secret_post`` (a ``client_secret_basic`` client keeps them in the Basic header)."""
    refresh_leeway_seconds: int = 300
    """Refresh this long before the access token expires."""
    on_token_exchanged: AuthHandler
    """``(tokens: OAuthTokens, ctx) -> AuthResult``: typically calls /me."""
    refresh: AuthHandler | None = None
    """Optional ``(credentials, ctx) -> credentials``; default is the standard refresh grant."""


class GitHubAppAuth(_Frozen):
    """GitHub App installation: redirect to install, capture ``installation_id``, resolve it."""

    type: Literal["github_app"] = "github_app"
    app_slug_env: str = "GITHUB_APP_SLUG"
    """Environment variable with the app's slug (for the install URL)."""
    app_slug_fallback_env: str | None = None
    """Read for the slug when ``app_slug_env`` is unset (the reference's ``GITHUB_APP_NAME``)."""
    install_url: str = "{WEB}/apps/{slug}/installations/new"
    """Install page; ``{WEB}`` is a named base, ``{slug}`` the app slug."""
    app_id_env: str = "GITHUB_APP_ID"
    """Environment variable with the App ID (the ``iss`` of the app JWT)."""
    private_key_env: str = "GITHUB_APP_PRIVATE_KEY"
    """Environment variable with the app's PEM private key (RS256)."""
    token_url: str = "{API}/app/installations/{installation_id}/access_tokens"
    """Where an installation access token is minted with the app JWT."""
    refresh_leeway_seconds: int = 300
    """Mint a new installation token this long before the current one expires (they live one hour)."""
    on_installation: AuthHandler
    """``(installation_id: int, ctx) -> AuthResult``; ``ctx.app_jwt()`` authenticates as the app."""
    fields: tuple[Field, ...] = ()
    """Optional alternative to installing the app: fields of a token the user pastes (a personal access
    token). A connect request carrying ``credentials`` takes this path, checked by ``test``."""
    test: AuthHandler | None = None
    """``(credentials, ctx) -> AuthResult`` for ``fields``, as an ``api_key`` test; the result's
    credentials should hold the token as ``access_token`` (it is sent as the bearer and never minted)."""


class CustomAuth(_Frozen):
    """Escape hatch: the plugin owns ``POST .../connect`` (and optionally a return leg)."""

    type: Literal["custom"] = "custom"
    fields: tuple[Field, ...] = ()
    """Optional form fields shown by the generic dialog."""
    connect: AuthHandler
    """``(request: ConnectRequest, ctx) -> dict | AuthResult``; ``ctx.save_connection`` persists."""
    callback: AuthHandler | None = None
    """``(request: ConnectRequest, ctx)`` for the provider's redirect back (``.../connect/callback``)."""


Auth = ApiKeyAuth | OAuth2Auth | GitHubAppAuth | CustomAuth


class OAuthTokens(_Frozen):
    """Parsed token endpoint response handed to ``on_token_exchanged``."""

    access_token: str
    refresh_token: str | None = None
    expires_at: str | None = None
    """ISO 8601 UTC time the access token expires."""
    token_type: str | None = None
    scope: str | None = None
    raw: dict[str, Any] = PField(default_factory=dict)
