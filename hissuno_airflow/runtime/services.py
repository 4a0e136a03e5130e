"""One services object per (plugin, connection), behind every context a plugin handler gets.

Sync, webhook, ``instances()``, auth test, connect flows and custom handlers all see the platform
through ``ConnectionServices``: named base URLs, HTTP clients (retries, redaction, the account's rate
budget, the cancel signal and, for token-based auth, bearer auth from live credentials), the live
credentials themselves (read once, refreshed or minted when stale, under the cross-process lock), the
plugin logger and the secrets to mask. It is the one definition of how credentials are read and
refreshed; ``refresh.ensure_fresh`` is the mechanism it calls.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .. import settings
from ..kit.context import CancelSignal
from ..kit.define import PluginDef
from ..kit.errors import InputError
from ..kit.http.client import RateLimiter
from ..kit.http.ratelimit import AllBudgets, BudgetScope, NamedBudget, RateBudget, SharedRateBudget
from ..kit.redaction import secret_values
from .logging import PluginLogger
from .urls import resolve_base, resolve_url

__all__ = ["TOKEN_AUTH_TYPES", "ConnectionServices", "LiveBearerAuth", "budget_for", "named_budget", "resolve_base",
           "resolve_url"]

if TYPE_CHECKING:
    from ..kit.http.client import ProviderClient
    from ..store.connections import ConnectionRow
    from ..store.db import Store

# Auth types whose credentials carry an access token that expires (refreshed or minted again).
TOKEN_AUTH_TYPES = frozenset({"oauth2", "github_app"})


_budgets: dict[tuple[object, ...], RateLimiter] = {}
_budgets_lock = threading.Lock()


def budget_for(plugin: PluginDef, connection_id: str, *, store: Store | None = None,
               account: str | None = None) -> RateLimiter | None:
    """The account's request budget from the plugin's declared rate (None when it declares none).

    With a store it is shared by every process calling the account (booked in ``rate_budgets``; see
    ``store.rate_budgets``) unless ``HISSUNO_RATE_BUDGET=process``; without one, this process's own.
    ``account`` is the provider account (the connection's external account id): two connections of one
    account share its budget, as the provider counts them together; default the connection id.
    """
    if plugin.rate_limit_per_minute is None:
        return None
    return named_budget(plugin.id, account or connection_id, NamedBudget("requests", plugin.rate_limit_per_minute,
                                                                        plugin.rate_limit_burst), store=store)


def named_budget(plugin_id: str, account: str, spec: NamedBudget, *, store: Store | None = None) -> RateLimiter:
    """One budget of an account (the general one, or a named one such as Zendesk's export), one object
    per process and store so its fallback bucket is shared by the process's threads."""
    shared = store is not None and settings.rate_budget_scope() == "shared"
    key = (plugin_id, account, spec, store if shared else None)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            if shared:
                from ..store.rate_budgets import StoreLedger

                assert store is not None
                budget = SharedRateBudget(StoreLedger(store), BudgetScope(plugin_id, account, spec.name),
                                          spec.per_minute, burst=spec.burst)
            else:
                budget = RateBudget(spec.per_minute, burst=spec.burst)
            _budgets[key] = budget
        return budget


class LiveBearerAuth(httpx.Auth):
    """``Authorization: Bearer`` from the connection's live token; a 401 refreshes once and resends.

    The refresh goes through the one single-flight path (``ConnectionServices.refresh``), so many
    clients of one connection that hit a 401 together send one token request.
    """

    def __init__(self, services: ConnectionServices) -> None:
        self._services = services

    def __repr__(self) -> str:
        return "LiveBearerAuth(token=SecretStr('**********'))"

    def secret_values(self) -> list[str]:
        """Every token this connection used so far (the client masks them)."""
        return list(self._services.secrets)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign with the live token; on a 401 refresh (forced, once) and resend."""
        token = str(self._services.credentials().get("access_token") or "")
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and self._services.can_refresh:
            fresh = self._services.refresh(seen_token=token)
            new_token = str(fresh.get("access_token") or "")
            if new_token and new_token != token:
                request.headers["Authorization"] = f"Bearer {new_token}"
                yield request


class ConnectionServices:
    """Base URLs, HTTP clients, live credentials, logger, rate budget and cancel signal of one
    (plugin, connection); ``connection`` is None before an account exists (connect flows, auth tests).

    Args:
        plugin: The plugin.
        store: The hissuno store (None: no credential persistence or refresh, e.g. an Airflow hook test).
        connection: The connection row, when there is one.
        label: Logger prefix after the plugin id (``sessions``, ``connect``, ...).
        signal: Cancellation signal passed to every HTTP client.
        credentials: Credentials already in hand (a hook's, or a connect flow's); default: loaded on demand.
        logger: The stdlib logger behind the plugin logger.
    """

    def __init__(
        self, plugin: PluginDef, *, store: Store | None = None, connection: ConnectionRow | None = None,
        label: str = "connect", signal: CancelSignal | None = None,
        credentials: Mapping[str, Any] | None = None, logger: Any = None,
    ) -> None:
        self.plugin = plugin
        self.store = store
        self.connection = connection
        self.signal = signal
        # Secret settings (``webhook_secret``) are masked like credentials wherever this connection writes.
        self.secrets: list[str] = secret_values(connection.settings) if connection is not None else []
        self.logger = PluginLogger(f"{plugin.id}:{label}", self.secrets, logger)
        self._creds: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.refresh_refused = False
        """The token endpoint refused this connection's refresh (revoked grant): asking again cannot help."""
        if credentials is not None:
            self._remember(dict(credentials))

    # -- credentials --------------------------------------------------------------------------------

    @property
    def token_based(self) -> bool:
        """True for OAuth 2.0 and GitHub App plugins (their access tokens expire)."""
        return self.plugin.auth_type in TOKEN_AUTH_TYPES

    @property
    def can_refresh(self) -> bool:
        """True when a stale token can be replaced (token-based auth, a connection and a store)."""
        return self.token_based and self.connection is not None and self.store is not None

    def _remember(self, creds: dict[str, Any]) -> dict[str, Any]:
        self.secrets.extend(s for s in secret_values(creds, self.plugin.secret_fields) if s not in self.secrets)
        self._creds = creds
        return creds

    def stored_credentials(self) -> dict[str, Any]:
        """The credentials as stored (no refresh); loaded once."""
        with self._lock:
            if self._creds is None:
                if self.connection is None or self.store is None:
                    return self._remember({})
                from .credentials import load_credentials

                self._remember(load_credentials(self.store, self.connection))
            assert self._creds is not None
            return dict(self._creds)

    def credentials(self) -> dict[str, Any]:
        """Live credentials: for token-based plugins the access token is refreshed or minted when stale."""
        creds = self.stored_credentials()
        if not self.can_refresh:
            return creds
        fresh = self._fresh(creds)
        with self._lock:
            return dict(self._remember(fresh))

    def refresh(self, *, seen_token: str | None = None) -> dict[str, Any]:
        """Force a refresh (the provider answered 401); skipped when another process already replaced
        ``seen_token``. Returns the live credentials."""
        creds = self.stored_credentials()
        if not self.can_refresh:
            return creds
        if seen_token is not None:
            creds = {**creds, "access_token": seen_token}
        fresh = self._fresh(creds, force=True)
        with self._lock:
            return dict(self._remember(fresh))

    def _fresh(self, creds: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        from ..kit.errors import ProviderAuthError
        from .refresh import ensure_fresh

        assert self.connection is not None and self.store is not None
        try:
            return ensure_fresh(self.plugin, self.connection, _TokenSource(self), self.store, creds=creds,
                                force=force)
        except ProviderAuthError:
            self.refresh_refused = True
            raise

    def load(self) -> dict[str, Any]:
        """Read the stored credentials again (another process may have refreshed them)."""
        with self._lock:
            self._creds = None
        return self.stored_credentials()

    def save(self, credentials: dict[str, Any]) -> None:
        """Persist credentials to the connection's backend and use them from now on."""
        if self.connection is None or self.store is None:
            msg = f"plugin {self.plugin.id!r}: no connection to save credentials to"
            raise InputError(msg, field="connection_id")
        from .credentials import save_credentials

        save_credentials(self.store, self.connection, dict(credentials))
        with self._lock:
            self._remember(dict(credentials))

    save_credentials = save

    # -- HTTP -----------------------------------------------------------------------------------------

    def base_url(self, name: str) -> str:
        """The plugin's named base URL: ``HISSUNO_<PLUGIN>_<NAME>_URL``, the fixed URL, or the template
        filled from the connection's settings and credentials (validated; no private addresses)."""
        template = self.plugin.base_urls.get(name, "")
        if "{" not in template:
            return resolve_base(self.plugin, name)
        values: dict[str, object] = {}
        if self.connection is not None:
            values.update(self.connection.settings or {})
        if self.connection is not None or self._creds is not None:
            values.update(self.stored_credentials())
        return resolve_base(self.plugin, name, values if values else None)

    @property
    def _account(self) -> str:
        assert self.connection is not None
        return self.connection.external_account_id or self.connection.id

    @property
    def rate_budget(self) -> RateLimiter | None:
        """The account's request budget, shared with every process calling it (None for connect flows)."""
        if self.connection is None:
            return None
        return budget_for(self.plugin, self.connection.id, store=self.store, account=self._account)

    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient:
        """A ``ProviderClient`` for a named base with retries, redacted logs, the rate budget, the cancel
        signal and, for token-based plugins with a connection, bearer auth from the live token (a 401
        refreshes through the single-flight path). Keyword options override each default.

        ``budget=NamedBudget(name, per_minute, burst)``: every request of this client also waits for a slot
        in that budget of the account (shared like the account's own), first, as it is the scarcer one.
        A ``RateLimiter`` object there is used as is (tests pace on a fake clock)."""
        from ..kit.http.client import ProviderClient

        kwargs.setdefault("rate_limiter", self.rate_budget)
        extra = kwargs.pop("budget", None)
        if extra is not None:
            if isinstance(extra, NamedBudget):
                account = self._account if self.connection is not None else "unconnected"
                extra = named_budget(self.plugin.id, account, extra, store=self.store)
            own = kwargs["rate_limiter"]
            kwargs["rate_limiter"] = AllBudgets(extra, own) if own is not None else extra
        kwargs.setdefault("signal", self.signal)
        kwargs.setdefault("logger", self.logger)
        kwargs.setdefault("provider_name", self.plugin.name)
        if "auth" not in kwargs and self.can_refresh:
            kwargs["auth"] = LiveBearerAuth(self)
        kwargs["secrets"] = [*self.secrets, *kwargs.get("secrets", ())]
        return ProviderClient(self.plugin.id, self.base_url(base), **kwargs)


class _TokenSource:
    """What the refresh machinery sees of a connection: its stored credentials, and clients that do not
    sign with the connection's own (expiring) token, so minting a token never waits on itself."""

    def __init__(self, owner: ConnectionServices) -> None:
        self._owner = owner
        self.logger = owner.logger

    def load(self) -> dict[str, Any]:
        return self._owner.load()

    def save(self, credentials: dict[str, Any]) -> None:
        self._owner.save(credentials)

    def base_url(self, name: str) -> str:
        return self._owner.base_url(name)

    def http_client(self, base: str = "API", **kwargs: Any) -> ProviderClient:
        kwargs.setdefault("auth", None)
        return self._owner.http_client(base, **kwargs)
