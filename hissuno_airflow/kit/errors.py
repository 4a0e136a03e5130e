"""The one exception tree of hissuno-airflow, grouped by what the caller should do.

    HissunoError
    ├── PluginDefinitionError          a plugin module is wrong (import time)
    ├── InputError (ValueError)        bad user input: 400, names the field and what was expected
    │   ├── NotFoundError              404 (connection, stream, ...)
    │   │   └── UnknownPluginError     404
    │   ├── ConflictError              409: conflicts with existing state (multi_instance=False, ...)
    │   │   └── AccountExists          409: the account is connected; name the connection to update it
    │   ├── ConnectFailed              400: the provider or the plugin's test refused the credentials
    │   └── SyncAlreadyRunning         409: another run of the stream is active (retriable)
    ├── NotConfigured                  503: a server-side setting a flow needs is missing (names it)
    ├── ProviderError                  the provider answered badly
    │   ├── ProviderAuthError          401/403: fatal, the user must reconnect
    │   ├── RateLimited                429: retriable after ``retry_after`` seconds
    │   ├── ProviderUnavailable        5xx or network: retriable
    │   └── ProviderResponseError      any other 4xx or a malformed body: fatal
    │       └── SearchCapExceeded      more records share one timestamp than a capped search returns
    ├── WebhookSignatureError          401: nothing is written
    ├── StoreError                     the store failed
    │   ├── StoreUnavailable           the store cannot be reached (retriable)
    │   └── LeaseLost                  a run lost its stream's lease and stopped writing (retriable)
    └── SyncCancelled                  a run was cancelled through ``ctx.signal``
"""

from __future__ import annotations

from typing import ClassVar


class HissunoError(Exception):
    """Root of every error hissuno-airflow raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False


class PluginDefinitionError(HissunoError):
    """A plugin definition is invalid; one line per problem."""

    code = "plugin_definition"

    def __init__(self, plugin_id: str, problems: list[str]) -> None:
        self.plugin_id = plugin_id
        self.problems = problems
        lines = [f"plugin {plugin_id!r}: {p}" for p in problems]
        super().__init__("\n".join(lines))


class InputError(HissunoError, ValueError):
    """Bad input from a user; names the field and what was expected."""

    code = "invalid_input"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class SyncAlreadyRunning(InputError):
    """Another run of the same stream holds its lock; retry later."""

    code = "already_running"
    http_status = 409
    retriable = True


class ConflictError(InputError):
    """The request conflicts with existing state (an account already connected, ``multi_instance=False``)."""

    code = "conflict"
    http_status = 409


class AccountExists(ConflictError):
    """The provider account is connected already and the request did not name that connection.

    Reconnecting is explicit: the request names the connection to update (``connection_id``; for the
    redirect flows it travels in the signed state), so an empty or mistyped form field never silently
    rewrites an existing connection's credentials and settings.
    """

    code = "account_exists"

    def __init__(self, plugin_name: str, connection_id: str, account_label: str) -> None:
        self.connection = {"id": connection_id, "account_label": account_label}
        msg = (f"connection_id: this {plugin_name} account is already connected as {connection_id!r} "
               f"({account_label}); name that connection to update it")
        super().__init__(msg, field="connection_id")


class ConnectFailed(InputError):
    """The provider (or the plugin's ``test``) refused the credentials."""

    code = "connect_failed"


class NotConfigured(HissunoError):
    """A server-side setting a flow needs (client id, app key, credential backend) is missing."""

    code = "not_configured"
    http_status = 503

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class NotFoundError(InputError):
    """A named thing (connection, stream, handler) does not exist."""

    code = "not_found"
    http_status = 404


class UnknownPluginError(NotFoundError):
    """No plugin with this id is registered."""

    code = "unknown_plugin"

    def __init__(self, plugin_id: str) -> None:
        super().__init__(f"unknown plugin {plugin_id!r}", field="plugin_id")
        self.plugin_id = plugin_id


class ProviderError(HissunoError):
    """A provider API call failed."""

    code = "provider_error"
    http_status = 502

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        super().__init__(message)


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (401/403); the user must reconnect."""

    code = "provider_auth"
    http_status = 400


class RateLimited(ProviderError):
    """The provider rate-limited us (429) and retries ran out."""

    code = "rate_limited"
    http_status = 503
    retriable = True

    def __init__(
        self, message: str, *, provider: str = "", status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """5xx or a network failure; retriable."""

    code = "provider_unavailable"
    http_status = 503
    retriable = True


class ProviderResponseError(ProviderError):
    """Any other 4xx, or a body that could not be understood."""

    code = "provider_response"


class SearchCapExceeded(ProviderResponseError):
    """More records share one update time than a capped search may return; re-windowing cannot help."""

    code = "search_cap_exceeded"

    def __init__(self, message: str, *, provider: str = "", at: object = None, cap: int = 0) -> None:
        super().__init__(message, provider=provider, status=None)
        self.at = at
        """The update time shared by at least ``cap`` records."""
        self.cap = cap
        """The provider's result cap."""


class WebhookSignatureError(HissunoError):
    """A webhook failed verification; nothing is written."""

    code = "bad_signature"
    http_status = 401


class StoreError(HissunoError):
    """The store failed."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The store cannot be reached."""

    code = "store_unavailable"
    http_status = 503
    retriable = True


class LeaseLost(StoreError):
    """The run no longer holds its stream's lease (it expired while the run could not renew it, and the
    run was closed); the run wrote nothing after that and the next run takes over."""

    code = "lease_lost"
    http_status = 503
    retriable = True


class SyncCancelled(HissunoError):
    """The run was cancelled through its signal."""

    code = "cancelled"
    http_status = 409
