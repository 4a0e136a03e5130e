"""``ProviderClient``: a thin ``httpx.Client`` wrapper for one provider, with retries, paging and redaction.

A plugin's ``client.py`` composes it: the runtime builds the ``ProviderClient`` (base URL, auth from
the live credentials, rate budget, cancel signal, redaction) and the provider client adds named methods::

    class ZendeskClient:
        def __init__(self, http: ProviderClient) -> None:
            self.http = http

        def iter_tickets(self, since: int) -> Iterator[dict[str, Any]]:
            return self.http.paginate("GET", "/api/v2/incremental/tickets/cursor.json",
                                      CursorPaginator("after_cursor", "after_cursor", end_path="end_of_stream"),
                                      params={"start_time": since}, data_path="tickets")

    def sync_tickets(ctx: SyncCtx) -> None:
        with ctx.http_client(auth=BasicAuth(f"{ctx.credentials['email']}/token", ctx.credentials["token"])) as http:
            for ticket in ZendeskClient(http).iter_tickets(since):
                ...

Every attempt goes through the ``RetryPolicy``; failures surface as the kit's ``ProviderError`` family
with text like ``zendesk GET /api/v2/tickets: 429 Too Many Requests (retry after 30s)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, Unpack

import httpx

from ..errors import ProviderResponseError
from ..redaction import is_sensitive_key, redact_text, sanitize_url
from .paginators import PageRequest, Paginator, extract_items
from .retry import CallInfo, LogSink, RateState, ResponseCheck, RetryPolicy

OnRequest = Callable[[str, str], object]
"""Hook called before every attempt with the method and the sanitized URL."""

# httpx logs each request's raw URL at INFO ("HTTP Request: GET <url>"), outside this client's redaction:
# a token in a path (HubSpot's GET /oauth/v1/access-tokens/{token}) or a query would reach the web
# server's and the workers' logs. This client writes its own redacted request lines instead.
logging.getLogger("httpx").setLevel(logging.WARNING)


class RateLimiter(Protocol):
    """A shared budget; ``acquire`` blocks until one request may go out (see ``RateBudget``)."""

    def acquire(self) -> object: ...


class Cancellable(Protocol):
    """A cancellation signal (``kit.CancelSignal`` fits); checked before every attempt."""

    def raise_if_cancelled(self) -> None: ...


class ClientOptions(TypedDict, total=False):
    """Keyword options a provider client subclass passes through to ``ProviderClient``."""

    auth: httpx.Auth | None
    headers: Mapping[str, str] | None
    timeout: float | httpx.Timeout
    retry: RetryPolicy | None
    transport: httpx.BaseTransport | None
    logger: LogSink | None
    secrets: Iterable[str]
    on_request: OnRequest | None
    rate_limiter: RateLimiter | None
    signal: Cancellable | None
    error_code: Callable[[httpx.Response], str | None] | None
    follow_redirects: bool


@dataclass(frozen=True)
class Page:
    """One fetched page."""

    number: int
    """1-based page index within this pagination."""
    response: httpx.Response
    """The HTTP response (already read)."""
    body: Any
    """The parsed JSON body."""
    items: list[Any]
    """Records found at ``data_path``."""


class ProviderClient:
    """HTTP access to one provider: base URL, auth, retries, rate budget, paging and redacted logs."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        logger: LogSink | None = None,
        secrets: Iterable[str] = (),
        on_request: OnRequest | None = None,
        rate_limiter: RateLimiter | None = None,
        signal: Cancellable | None = None,
        error_code: Callable[[httpx.Response], str | None] | None = None,
        follow_redirects: bool = True,
        provider_name: str | None = None,
    ) -> None:
        """Create a client; nothing is sent until a request method is called.

        Args:
            provider: Plugin id, used in error text and logs (``"zendesk"``).
            base_url: Resolved API base; relative paths are appended to it.
            auth: Request signing, e.g. ``BearerAuth``; its secrets are redacted automatically.
            headers: Default headers (sensitive ones, like ``X-Api-Key``, are redacted too).
            timeout: Seconds per request, or an ``httpx.Timeout``.
            retry: Retry policy; defaults to ``RetryPolicy()``.
            transport: An ``httpx`` transport, e.g. ``httpx.MockTransport`` around a fake provider.
            logger: Where "attempt n/N" warnings and per-request debug lines go (redacted).
            secrets: Further values to mask in every log line and error message.
            on_request: Called as ``on_request(method, sanitized_url)`` before every attempt.
            rate_limiter: Object whose ``acquire()`` is called before every attempt (``RateBudget``).
            signal: Cancellation signal checked before every attempt.
            error_code: Extracts a short provider error code from a failed response for error text.
            follow_redirects: Follow 3xx (httpx drops ``Authorization`` when the origin changes).
            provider_name: Display name for log lines ("waiting 30 s for Zendesk's rate limit").
        """
        self.provider = provider
        self.provider_name = provider_name
        self.base_url = base_url
        self.retry = retry if retry is not None else RetryPolicy()
        self._logger: LogSink = logger if logger is not None else logging.getLogger(f"hissuno.http.{provider}")
        self._on_request = on_request
        self._rate_limiter = rate_limiter
        self._signal = signal
        self._error_code = error_code
        self._state = RateState()
        collected = [s for s in secrets if s]
        for name, value in (headers or {}).items():
            if is_sensitive_key(name) and value:
                collected.append(value)
        self._fixed_secrets = tuple(dict.fromkeys(collected))
        # Asked on every use, not once: an auth that refreshes its token mid-run knows the new one.
        secret_values = getattr(auth, "secret_values", None)
        self._auth_secrets: Callable[[], Iterable[str]] | None = secret_values if callable(secret_values) else None
        self._http = _CookielessClient(
            base_url=base_url,
            auth=auth,
            headers=dict(headers or {}),
            timeout=timeout,
            transport=transport,
            follow_redirects=follow_redirects,
        )
        # What a plain path is joined to (see ``_target``): httpx's base always ends its path with "/",
        # which ``str`` leaves out when the path is only "/".
        base = self._http.base_url
        self._prefix = None if base.query or base.fragment else str(base).rstrip("/") + "/"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, base_url={sanitize_url(self.base_url)!r})"

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    @property
    def _secrets(self) -> tuple[str, ...]:
        if self._auth_secrets is None:
            return self._fixed_secrets
        return tuple(dict.fromkeys([*self._fixed_secrets, *(str(v) for v in self._auth_secrets() if v)]))

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values masked in this client's logs and errors."""
        return self._secrets

    def redact(self, text: str) -> str:
        """Mask this client's secrets (and bearer-looking tokens) in ``text``."""
        return redact_text(text, self._secrets)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        allow_statuses: Collection[int] = (),
        check: ResponseCheck | None = None,
    ) -> httpx.Response:
        """Send one logical request through the retry policy.

        Args:
            method: HTTP method.
            path_or_url: Path relative to the base URL, or an absolute URL.
            params: Query parameters (merged into a query string already in ``path_or_url``).
            json: JSON body.
            data: Form body.
            content: Raw body.
            headers: Extra headers for this request.
            allow_statuses: Non-retriable error statuses to return instead of raise (e.g. ``{404}``).
            check: Finds a failure a body reports despite its status (GraphQL ``errors`` in a 200);
                the retry policy treats it by its kind, so a body-level rate limit is retried like a 429.

        Returns:
            The response (2xx/3xx, or a status from ``allow_statuses``).

        Raises:
            ProviderAuthError: 401/403.
            RateLimited: 429 after retries, or a Retry-After above the policy's ``max_retry_after``.
            ProviderUnavailable: 5xx or a network error after retries.
            ProviderResponseError: Any other 4xx, or a ``check`` fault of kind ``client_error``.
        """
        method = method.upper()
        target = self._target(path_or_url, params or None)

        def build() -> httpx.Request:
            return self._http.build_request(
                method, target, json=json, data=data, content=content, headers=headers
            )

        # Built once for the first attempt; a retry builds a fresh one.
        prepared = [build()]
        url = prepared[0].url
        call = CallInfo(
            provider=self.provider,
            method=method,
            path=url.path,
            secrets=self._secrets,
            allow_statuses=frozenset(allow_statuses),
            error_code=self._error_code,
            check=check,
            provider_name=self.provider_name,
        )
        # The sanitized, redacted URL only when something will show it (the hook, or a debug line a logger
        # would write): sanitizing and redacting every request of a sync that logs none cost ~0.15 ms each.
        shown = self._on_request is not None or _debug_enabled(self._logger)
        safe_url = self.redact(sanitize_url(str(url))) if shown else ""

        def send() -> httpx.Response:
            if self._signal is not None:
                self._signal.raise_if_cancelled()
            if self._rate_limiter is not None:
                self._rate_limiter.acquire()
            if self._on_request is not None:
                self._on_request(method, safe_url)
            started = time.monotonic()
            response = self._http.send(prepared.pop() if prepared else build())
            if shown:
                self._logger.debug(
                    f"{method} {safe_url} -> {response.status_code} ({time.monotonic() - started:.2f}s)"
                )
            return response

        return self.retry.execute(send, call, logger=self._logger, state=self._state)

    def _target(self, path_or_url: str, params: Mapping[str, Any] | None) -> httpx.URL:
        """The URL of a request with its ``params``; httpx joins a relative one to the base when it builds.

        Given a path and ``params``, httpx parses three times (the path, the path joined to the base, and
        the result with the query: ~50 us of a ~500 us local request); a plain path (the common case:
        every record's detail call) is joined here as text and parsed once, to the same URL.
        """
        if (self._prefix is not None and path_or_url.startswith("/") and not path_or_url.startswith("//")
                and "?" not in path_or_url and "#" not in path_or_url):
            query = f"?{httpx.QueryParams(params)}" if params else ""
            return httpx.URL(f"{self._prefix}{path_or_url[1:]}{query}")
        url = httpx.URL(path_or_url)
        # ``params`` merge into a query already in the URL (a next link's); httpx's ``params=`` would
        # replace it.
        return url.copy_merge_params(dict(params)) if params else url

    def get(self, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """``request("GET", ...)``."""
        return self.request("GET", path_or_url, **kwargs)

    def post(self, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """``request("POST", ...)``."""
        return self.request("POST", path_or_url, **kwargs)

    def put(self, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """``request("PUT", ...)``."""
        return self.request("PUT", path_or_url, **kwargs)

    def patch(self, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """``request("PATCH", ...)``."""
        return self.request("PATCH", path_or_url, **kwargs)

    def delete(self, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """``request("DELETE", ...)``."""
        return self.request("DELETE", path_or_url, **kwargs)

    def request_json(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """Send a request and parse its JSON body (``None`` for an empty body).

        Raises:
            ProviderResponseError: The body is not JSON; plus everything ``request`` raises.
        """
        return self.parse_json(self.request(method, path_or_url, **kwargs))

    def get_json(self, path_or_url: str, **kwargs: Any) -> Any:
        """``request_json("GET", ...)``."""
        return self.request_json("GET", path_or_url, **kwargs)

    def post_json(self, path_or_url: str, **kwargs: Any) -> Any:
        """``request_json("POST", ...)``; for POST-shaped read APIs (Notion, GraphQL, search)."""
        return self.request_json("POST", path_or_url, **kwargs)

    def parse_json(self, response: httpx.Response) -> Any:
        """Parse a response body as JSON; the error names the call but never quotes the body.

        Raises:
            ProviderResponseError: The body is not JSON.
        """
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError as exc:
            status = response.status_code
            msg = self.redact(
                f"{self.provider} {response.request.method} {response.request.url.path}: "
                f"{status} {httpx.codes.get_reason_phrase(status)}, expected a JSON body"
            )
            raise ProviderResponseError(msg, provider=self.provider, status=status) from exc

    def pages(
        self,
        method: str,
        path: str,
        paginator: Paginator,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data_path: str | None = None,
        max_pages: int | None = None,
        check: ResponseCheck | None = None,
    ) -> Iterator[Page]:
        """Yield pages until the paginator says there are no more.

        The paginator sees each page (``update_state``) before it is yielded, so its state, such as
        ``next_token``, describes the page after the one in hand.

        Args:
            method: HTTP method of every page request.
            path: Path (or absolute URL) of the first page.
            paginator: Strategy that turns a page into the next request; reset on each call.
            params: Query parameters of the first page (paginators add theirs).
            json: JSON body of the first page (body-cursor paginators update a copy).
            data_path: Dotted path to the records in each body; ``None`` when the body is a list.
            max_pages: Stop after this many pages.
            check: Body-level failure check applied to every page (see ``request``).

        Yields:
            ``Page`` objects.

        Raises:
            ProviderResponseError: A body is not JSON or has no list at ``data_path``, a next link
                points to another origin, or the paginator does not advance.
        """
        request = PageRequest(url=path, params=dict(params or {}), json=json)
        paginator.init_request(request)
        origin: tuple[bytes, str, int | None] | None = None
        number = 0
        while True:
            response = self.request(method, request.url, params=request.params, json=request.json, check=check)
            if origin is None:  # the first page's URL as sent (before any redirect) is the origin
                first = (response.history[0] if response.history else response).request.url
                origin = (first.raw_scheme, first.host, first.port)
            body = self.parse_json(response)
            try:
                items = extract_items(body, data_path)
            except TypeError as exc:
                msg = f"{self._label(method, response)}: {exc}"
                raise ProviderResponseError(msg, provider=self.provider, status=response.status_code) from exc
            paginator.update_state(response, items)
            number += 1
            yield Page(number=number, response=response, body=body, items=items)
            if not paginator.has_next_page or (max_pages is not None and number >= max_pages):
                return
            before = request.snapshot()
            paginator.update_request(request)
            if request.snapshot() == before:
                msg = f"{self._label(method, response)}: pagination did not advance (page {number})"
                raise ProviderResponseError(msg, provider=self.provider, status=response.status_code)
            if request.url.startswith(("http://", "https://")) and not _same_origin(request.url, origin):
                # A next link on another host would receive our credentials with the next request.
                msg = f"{self._label(method, response)}: next page points to another origin"
                raise ProviderResponseError(msg, provider=self.provider, status=response.status_code)

    def _label(self, method: str, response: httpx.Response) -> str:
        """``<provider> <METHOD> <path>`` of a page, redacted: built only for an error's text."""
        return self.redact(f"{self.provider} {method.upper()} {response.request.url.path}")

    def paginate(
        self,
        method: str,
        path: str,
        paginator: Paginator,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data_path: str | None = None,
        max_pages: int | None = None,
        check: ResponseCheck | None = None,
    ) -> Iterator[Any]:
        """Yield the records of every page in order; see ``pages`` for the arguments."""
        for page in self.pages(
            method, path, paginator, params=params, json=json, data_path=data_path, max_pages=max_pages,
            check=check,
        ):
            yield from page.items


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing a response sets."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore the response's ``Set-Cookie``."""


class _CookielessClient(httpx.Client):
    """An ``httpx.Client`` that neither keeps nor sends cookies.

    Every provider here authenticates each request with its credentials; a cookie is at best a load
    balancer's, and one kept from a response must not ride on later requests (a refreshed token's, or after
    a redirect). httpx also parsed every response for cookies through ``urllib`` (~60 us a response, 9% of
    a sync's HTTP time against a local provider), even when it set none.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        """Always empty."""
        return self._none

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("a provider client keeps no cookies")


def _debug_enabled(logger: LogSink) -> bool:
    """Whether ``logger.debug`` would write anything: a stdlib logger and the runtime's plugin logger say
    so (``isEnabledFor``); any other sink is assumed to record everything."""
    enabled = getattr(logger, "isEnabledFor", None)
    return bool(enabled(logging.DEBUG)) if callable(enabled) else True


def _same_origin(url: str, origin: tuple[bytes, str, int | None]) -> bool:
    parsed = httpx.URL(url)
    return (parsed.raw_scheme, parsed.host, parsed.port) == origin


def client_factory(
    provider: str, base_urls: Mapping[str, str], **defaults: Unpack[ClientOptions]
) -> Callable[..., ProviderClient]:
    """Return ``make(base="API", **options)`` building clients for the named base URLs of one provider.

    The runtime builds one factory per connection (shared rate budget, secrets, request counter) and
    hands it to contexts as ``ctx.http_client``; per-call options override the defaults, and secrets
    are merged rather than replaced.

    Args:
        provider: Plugin id.
        base_urls: Resolved base URLs by name (``API``, ``AUTH``, ...).
        **defaults: Options applied to every client.

    Returns:
        The factory.
    """

    def make(base: str = "API", **options: Unpack[ClientOptions]) -> ProviderClient:
        if base not in base_urls:
            known = ", ".join(sorted(base_urls)) or "none"
            msg = f"{provider}: unknown base URL {base!r}; expected one of {known}"
            raise ValueError(msg)
        merged: ClientOptions = {**defaults, **options}
        merged["secrets"] = [*defaults.get("secrets", ()), *options.get("secrets", ())]
        return ProviderClient(provider, base_urls[base], **merged)

    return make
