"""A framework for stateful fake provider APIs, served in-process or on a real loopback socket.

A provider fake is a short subclass of ``FakeProvider`` whose handlers are methods marked with the
route decorators below. Each handler takes a ``FakeRequest`` (plus path parameters) and returns a
reply: a ``FakeResponse``, a ``(status, json)`` or ``(status, json, headers)`` tuple, or a bare
dict/list (200 JSON)::

    class FakeZendesk(FakeProvider):
        require_auth = True

        def __init__(self) -> None:
            super().__init__()
            self.tickets = [{"id": 1}]

        @get("/api/v2/tickets/{ticket_id}")
        def show(self, req: FakeRequest, ticket_id: str) -> Reply:
            return {"ticket": self.tickets[0]}

    fake = FakeZendesk()
    token = fake.issue_token()
    httpx.Client(transport=fake.transport())      # in-process, no socket
    with fake:                                     # real HTTP on 127.0.0.1, random port
        httpx.get(fake.url + "/api/v2/tickets/1", headers={"Authorization": f"Bearer {token}"})

Built-in state: ``requests`` (every request seen, faults included), injected faults (``inject``,
``inject_429``, ``inject_5xx``, ``rate_limit``: the next n matching requests, every Nth, or an exact
fraction spread evenly, all deterministic), hooks that run before a matching request reaches its route
(``before_request``: change the provider's data between two pages), ``RecordSet`` (records whose provider
timestamps move on the fake's clock when they are added or updated), bearer tokens with expiry
(``issue_token``, ``expire_token``, ``revoke_token``, ``check_bearer``) on an injectable clock, and
``errors`` (exceptions raised by handlers, answered as 500).
Stdlib only, besides httpx for the in-process transport.
"""

from __future__ import annotations

import base64
import json as jsonlib
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import httpx

__all__ = [
    "FakeClock",
    "FakeProvider",
    "FakeRequest",
    "FakeResponse",
    "Fault",
    "Hook",
    "RecordSet",
    "Reply",
    "Router",
    "delete",
    "get",
    "iso_z",
    "patch",
    "post",
    "put",
    "route",
]


@dataclass
class FakeRequest:
    """One request as a handler sees it."""

    method: str
    path: str
    query_list: list[tuple[str, str]]
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes
    base_url: str
    """``scheme://host[:port]`` as the client addressed the fake; use it to build absolute links."""
    path_params: dict[str, str] = field(default_factory=dict)
    at: float = 0.0
    """Fake-clock time the request arrived."""

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, the last value winning."""
        return dict(self.query_list)

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header value by case-insensitive name."""
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return jsonlib.loads(self.body) if self.body else None

    @property
    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer`` header."""
        value = self.header("authorization") or ""
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """``(user, password)`` of an ``Authorization: Basic`` header."""
        value = self.header("authorization") or ""
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password

    def url_for(self, path: str, **query: Any) -> str:
        """An absolute URL on this fake (for next links), with ``query`` encoded."""
        qs = urlencode({k: v for k, v in query.items() if v is not None})
        return f"{self.base_url}{path}" + (f"?{qs}" if qs else "")


@dataclass
class FakeResponse:
    """A reply; ``body`` (raw bytes) wins over ``json``."""

    status: int = 200
    json: Any = None
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str | None = None

    def header_items(self) -> list[tuple[str, str]]:
        """Headers as a list (repeats allowed), with a content type when there is a body."""
        items = list(self.headers.items()) if isinstance(self.headers, Mapping) else list(self.headers)
        if not any(k.lower() == "content-type" for k, _ in items) and self.content():
            items.append(("Content-Type", self.content_type or ("application/json" if self.body is None else "text/plain")))
        return items

    def content(self) -> bytes:
        """The encoded body."""
        if self.body is not None:
            return self.body
        if self.json is None:
            return b""
        return jsonlib.dumps(self.json).encode()


Reply = FakeResponse | tuple[int, Any] | tuple[int, Any, Mapping[str, str]] | dict[str, Any] | list[Any]
Handler = Callable[..., Reply]
F = TypeVar("F", bound=Callable[..., Any])

_ROUTES_ATTR = "__fake_routes__"


def _compile(pattern: str) -> re.Pattern[str]:
    """``/a/{id}`` → named groups (``{rest:path}`` spans slashes); a leading ``^`` means a raw regex."""
    if pattern.startswith("^"):
        return re.compile(pattern)
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)(?::path)?\}", pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{'.+' if m.group(0).endswith(':path}') else '[^/]+'})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "$")


def route(method: str, pattern: str) -> Callable[[F], F]:
    """Mark a ``FakeProvider`` method as the handler of ``method`` + path ``pattern``."""

    def mark(fn: F) -> F:
        routes = list(getattr(fn, _ROUTES_ATTR, []))
        routes.append((method.upper(), pattern))
        setattr(fn, _ROUTES_ATTR, routes)
        return fn

    return mark


def get(pattern: str) -> Callable[[F], F]:
    """``route("GET", pattern)``."""
    return route("GET", pattern)


def post(pattern: str) -> Callable[[F], F]:
    """``route("POST", pattern)``."""
    return route("POST", pattern)


def put(pattern: str) -> Callable[[F], F]:
    """``route("PUT", pattern)``."""
    return route("PUT", pattern)


def patch(pattern: str) -> Callable[[F], F]:
    """``route("PATCH", pattern)``."""
    return route("PATCH", pattern)


def delete(pattern: str) -> Callable[[F], F]:
    """``route("DELETE", pattern)``."""
    return route("DELETE", pattern)


@dataclass
class _Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler


class Router:
    """Method + path routing; the first matching route wins; 404/405 otherwise."""

    def __init__(self) -> None:
        self.routes: list[_Route] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler(req, **path_params)``."""
        self.routes.append(_Route(method.upper(), pattern, _compile(pattern), handler))

    def route(self, method: str, pattern: str) -> Callable[[F], F]:
        """Decorator form of ``add`` for plain functions (``@fake.router.route("GET", "/x")``)."""

        def register(fn: F) -> F:
            self.add(method, pattern, fn)
            return fn

        return register

    def get(self, pattern: str) -> Callable[[F], F]:
        """``route("GET", pattern)``."""
        return self.route("GET", pattern)

    def post(self, pattern: str) -> Callable[[F], F]:
        """``route("POST", pattern)``."""
        return self.route("POST", pattern)

    def dispatch(self, req: FakeRequest) -> Reply:
        """Call the matching handler."""
        allowed: list[str] = []
        for r in self.routes:
            m = r.regex.match(req.path)
            if not m:
                continue
            if r.method != req.method:
                allowed.append(r.method)
                continue
            req.path_params = m.groupdict()
            return r.handler(req, **req.path_params)
        if allowed:
            return FakeResponse(405, {"error": "method_not_allowed"}, {"Allow": ", ".join(sorted(set(allowed)))})
        return FakeResponse(404, {"error": "not_found"})


@dataclass
class Fault:
    """A canned failure answered instead of the route when the request matches.

    ``times`` uses are left (None: unlimited). Among matching requests, ``every`` fails each Nth (the
    Nth, 2Nth, ...) and ``fraction`` fails exactly that share, spread evenly (0.25: the 4th, 8th, ...);
    both count only requests this fault sees, and are deterministic. Faults are tried in the order they
    were injected; the first that fires answers.
    """

    regex: re.Pattern[str]
    response: FakeResponse
    times: int | None = 1
    method: str | None = None
    when: Callable[[FakeRequest], bool] | None = None
    every: int | None = None
    fraction: float | None = None
    hits: int = 0
    seen: int = 0
    """Matching requests this fault has counted (for ``every``/``fraction``)."""

    def matches(self, req: FakeRequest) -> bool:
        """Whether this fault fires for ``req``: counts it when it matches and decides by ``every``/``fraction``."""
        if (self.times is not None and self.times <= 0) or not self.regex.match(req.path):
            return False
        if self.method is not None and self.method != req.method:
            return False
        if self.when is not None and not self.when(req):
            return False
        self.seen += 1
        if self.every is not None and self.seen % self.every != 0:
            return False
        if self.fraction is not None:
            # Fire when the running count of failures owed, floor(n * fraction), goes up.
            return math.floor(self.seen * self.fraction + 1e-9) > math.floor((self.seen - 1) * self.fraction + 1e-9)
        return True

    def fire(self) -> FakeResponse:
        """Use one of ``times`` and answer."""
        if self.times is not None:
            self.times -= 1
        self.hits += 1
        return self.response


@dataclass
class Hook:
    """An action run before a matching request reaches its route (after faults and auth let it through).

    Skips the first ``nth - 1`` matching requests, then runs ``times`` times (None: on every one).
    """

    regex: re.Pattern[str]
    action: Callable[[FakeRequest], None]
    nth: int = 1
    times: int | None = 1
    method: str | None = None
    when: Callable[[FakeRequest], bool] | None = None
    seen: int = 0
    runs: int = 0

    def maybe_run(self, req: FakeRequest) -> None:
        """Run the action if ``req`` matches and the hook is due."""
        if (self.times is not None and self.runs >= self.times) or not self.regex.match(req.path):
            return
        if (self.method is not None and self.method != req.method) or (self.when is not None and not self.when(req)):
            return
        self.seen += 1
        if self.seen < self.nth:
            return
        self.runs += 1
        self.action(req)


def iso_z(ts: float) -> str:
    """Epoch seconds as ``2026-04-01T09:00:00Z`` (whole seconds, the most common provider format)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RecordSet:
    """Provider records (dicts) keyed by ``id``, stamped with provider times from a clock.

    ``add`` stamps ``created_at`` and ``updated_at``; ``update`` changes fields and moves ``updated_at``.
    Stamps strictly increase by at least ``resolution`` seconds even when the clock stands still, so
    every mutation is visible to a client filtering ``updated_at > cursor``. ``fmt`` renders a stamp
    (ISO with ``Z`` by default; pass ``int`` for epoch seconds). Iteration and indexing follow
    insertion order; ``by_updated`` sorts by provider time, as incremental endpoints do.
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, *, id_field: str = "id", created_field: str | None = "created_at",
        updated_field: str = "updated_at", fmt: Callable[[float], Any] = iso_z, resolution: float = 1.0,
    ) -> None:
        self.clock = clock
        self.id_field, self.created_field, self.updated_field = id_field, created_field, updated_field
        self.fmt = fmt
        self.resolution = resolution
        self.records: dict[str, dict[str, Any]] = {}
        self.stamps: dict[str, float] = {}
        """Record id -> epoch seconds of its ``updated_at``."""
        self.deleted: dict[str, float] = {}
        self._last = -math.inf
        self._next_id = 1
        self._lock = threading.RLock()

    def _stamp(self, at: float | None) -> float:
        ts = self.clock() if at is None else at
        if at is None:
            ts = max(ts, self._last + self.resolution)
        self._last = max(self._last, ts)
        return ts

    def add(self, record: Mapping[str, Any] | None = None, *, at: float | None = None, **fields: Any) -> dict[str, Any]:
        """Add a record (an ``id`` is assigned when missing); ``at`` pins its time instead of the clock."""
        with self._lock:
            rec = {**(record or {}), **fields}
            if self.id_field not in rec:
                while str(self._next_id) in self.records:
                    self._next_id += 1
                rec[self.id_field] = self._next_id
            key = str(rec[self.id_field])
            if key in self.records:
                raise KeyError(f"record {key!r} exists; use update()")
            ts = self._stamp(at)
            if self.created_field:
                rec.setdefault(self.created_field, self.fmt(ts))
            rec[self.updated_field] = self.fmt(ts)
            self.records[key] = rec
            self.stamps[key] = ts
            return rec

    def add_many(self, n: int, make: Callable[[int], Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add ``make(i)`` for i in range(n)."""
        return [self.add(make(i)) for i in range(n)]

    def update(self, record_id: Any, *, at: float | None = None, **fields: Any) -> dict[str, Any]:
        """Change fields of a record and move its ``updated_at`` forward."""
        with self._lock:
            key = str(record_id)
            rec = self.records[key]
            rec.update(fields)
            ts = self._stamp(at)
            rec[self.updated_field] = self.fmt(ts)
            self.stamps[key] = ts
            return rec

    def delete(self, record_id: Any) -> dict[str, Any]:
        """Remove a record (its deletion time is kept in ``deleted``)."""
        with self._lock:
            key = str(record_id)
            self.stamps.pop(key, None)
            self.deleted[key] = self._stamp(None)
            return self.records.pop(key)

    def get(self, record_id: Any) -> dict[str, Any] | None:
        """The record with this id, or None."""
        return self.records.get(str(record_id))

    def by_updated(self, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Records with ``since < updated <= until`` (bounds optional), oldest update first."""
        with self._lock:
            keys = sorted(self.stamps, key=lambda k: (self.stamps[k], k))
            return [self.records[k] for k in keys
                    if (since is None or self.stamps[k] > since) and (until is None or self.stamps[k] <= until)]

    def newest(self) -> float | None:
        """Epoch seconds of the newest ``updated_at``."""
        return max(self.stamps.values(), default=None)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.records.values()))

    def __getitem__(self, index: int | slice) -> Any:
        return list(self.records.values())[index]


class FakeClock:
    """A settable clock whose ``sleep`` records the wait and advances time instead of blocking."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        """Current fake epoch seconds."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record ``seconds`` and move the clock forward."""
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Move the clock forward without recording a sleep."""
        with self._lock:
            self.now += seconds


class FakeProvider:
    """Base of stateful fake provider APIs; see the module docstring."""

    name = "fake"
    require_auth = False
    """When True, ``check_auth`` demands a valid bearer token on every route."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.router = Router()
        self.requests: list[FakeRequest] = []
        self.faults: list[Fault] = []
        self.hooks: list[Hook] = []
        self.errors: list[BaseException] = []
        self.tokens: dict[str, float | None] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._register_marked_routes()

    def _register_marked_routes(self) -> None:
        seen: set[str] = set()
        # Subclass first, so a subclass route shadows a base route on the same path.
        for klass in type(self).__mro__:
            for attr, value in vars(klass).items():
                if attr in seen:
                    continue
                for method, pattern in getattr(value, _ROUTES_ATTR, []):
                    self.router.add(method, pattern, getattr(self, attr))
                if hasattr(value, _ROUTES_ATTR):
                    seen.add(attr)

    # --- dispatch ---------------------------------------------------------------------------------

    def handle(self, req: FakeRequest) -> FakeResponse:
        """Record, apply faults and auth, route, and normalize the reply."""
        req.at = self.clock()
        with self._lock:
            self.requests.append(req)
            for fault in self.faults:
                if fault.matches(req):
                    return fault.fire()
        try:
            denied = self.check_auth(req)
            if denied is not None:
                return _normalize(denied)
            with self._lock:
                for hook in list(self.hooks):
                    hook.maybe_run(req)
            return _normalize(self.router.dispatch(req))
        except Exception as exc:  # a crashing handler must show up in the test, not hang it
            self.errors.append(exc)
            return FakeResponse(500, {"error": "fake_handler_crashed", "type": type(exc).__name__})

    def check_auth(self, req: FakeRequest) -> Reply | None:
        """Return a refusal or ``None``; override for provider-specific auth."""
        if self.require_auth:
            return self.check_bearer(req)
        return None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """Serve an ``httpx.Request`` in-process (the ``httpx.MockTransport`` handler)."""
        url = request.url
        netloc = url.host + (f":{url.port}" if url.port else "")
        req = FakeRequest(
            method=request.method,
            path=unquote(url.path),
            query_list=parse_qsl(url.query.decode(), keep_blank_values=True),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.read(),
            base_url=f"{url.scheme}://{netloc}",
        )
        resp = self.handle(req)
        return httpx.Response(resp.status, headers=resp.header_items(), content=resp.content())

    def transport(self) -> httpx.MockTransport:
        """An in-process transport for ``httpx.Client(transport=...)``."""
        return httpx.MockTransport(self)

    # --- real socket ------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on 127.0.0.1 (random port) in a background thread; returns the base URL."""
        if self._server is not None:
            return self.url
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        # A short poll interval keeps shutdown (and so every test teardown) fast.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=f"fake-{self.name}", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL of the running socket server."""
        if self._server is None:
            msg = f"fake {self.name!r} is not serving; use it as a context manager or call start()"
            raise RuntimeError(msg)
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeProvider:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- helpers for stateful behaviour -------------------------------------------------------------

    def inject(
        self,
        path: str,
        status: int,
        *,
        times: int | None = 1,
        method: str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
        every: int | None = None,
        fraction: float | None = None,
    ) -> Fault:
        """Answer matching requests with ``status`` instead of the route (see ``Fault`` for the knobs)."""
        if every is not None and every < 1:
            raise ValueError("every: expected 1 or more")
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError("fraction: expected a share in (0, 1]")
        fault = Fault(
            regex=_compile(path),
            response=FakeResponse(status, json, dict(headers or {})),
            times=times,
            method=method.upper() if method else None,
            when=when,
            every=every,
            fraction=fraction,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def inject_429(
        self,
        path: str,
        *,
        times: int | None = 1,
        retry_after: float | str | None = 30,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
        every: int | None = None,
        fraction: float | None = None,
        json: Any = None,
    ) -> Fault:
        """Rate-limit matching requests, with ``Retry-After`` (seconds, or a raw string) unless it is None."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        body = json if json is not None else {"error": "ratelimited", "message": "Too many requests"}
        return self.inject(path, 429, times=times, json=body, headers=hdrs, method=method, when=when,
                           every=every, fraction=fraction)

    def rate_limit(
        self,
        *,
        every: int | None = None,
        fraction: float | None = None,
        path: str = "^/",
        retry_after: float | str | None = 30,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Until removed, answer 429 to every Nth matching request or to an exact ``fraction`` of them.

        Deterministic: ``every=3`` limits the 3rd, 6th, ... request; a client that retries each 429 once
        always gets through. ``path`` defaults to every route. ``fake.faults.remove(fault)`` lifts it.
        """
        if every is None and fraction is None:
            raise ValueError("rate_limit: pass every= or fraction=")
        return self.inject_429(path, times=None, every=every, fraction=fraction, retry_after=retry_after,
                               method=method, headers=headers)

    def inject_5xx(
        self,
        path: str,
        *,
        status: int = 503,
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
        every: int | None = None,
        fraction: float | None = None,
    ) -> Fault:
        """Fail matching requests with a server error (``times=None`` with ``every``/``fraction``: a flaky API)."""
        body = {"error": "unavailable"}
        return self.inject(path, status, times=times, json=body, headers=headers, method=method, when=when,
                           every=every, fraction=fraction)

    def before_request(
        self,
        path: str,
        action: Callable[[FakeRequest], None],
        *,
        nth: int = 1,
        times: int | None = 1,
        method: str | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
    ) -> Hook:
        """Run ``action(req)`` before the ``nth`` matching request is routed (``times`` runs; None: always).

        The seam for data that changes during a sync: update or add records when page 2 is asked for,
        and the client sees them change between its pages::

            fake.before_request("/api/tickets", lambda req: fake.tickets.update(3, status="closed"),
                                when=lambda req: req.query.get("page") == "2")
        """
        hook = Hook(regex=_compile(path), action=action, nth=nth, times=times,
                    method=method.upper() if method else None, when=when)
        with self._lock:
            self.hooks.append(hook)
        return hook

    def issue_token(self, token: str | None = None, *, expires_in: float | None = None) -> str:
        """Accept ``token`` (random when omitted) as a bearer token, optionally expiring."""
        token = token or f"fake-{self.name}-{secrets.token_hex(12)}"
        with self._lock:
            self.tokens[token] = None if expires_in is None else self.clock() + expires_in
        return token

    def expire_token(self, token: str) -> None:
        """Make ``token`` expired now (it stays known, so ``check_bearer`` answers ``token_expired``)."""
        with self._lock:
            if token not in self.tokens:
                raise KeyError(f"token {token!r} was never issued")
            self.tokens[token] = self.clock() - 1

    def revoke_token(self, token: str) -> None:
        """Stop accepting ``token``."""
        with self._lock:
            self.tokens.pop(token, None)

    def token_valid(self, token: str | None) -> bool:
        """Whether ``token`` was issued, not revoked and not expired."""
        if token is None:
            return False
        with self._lock:
            if token not in self.tokens:
                return False
            expiry = self.tokens[token]
        return expiry is None or self.clock() < expiry

    def check_bearer(self, req: FakeRequest) -> FakeResponse | None:
        """401 unless the request carries a valid bearer token."""
        token = req.bearer_token
        if token is None:
            return FakeResponse(401, {"error": "not_authed"}, {"WWW-Authenticate": "Bearer"})
        if not self.token_valid(token):
            error = "token_expired" if token in self.tokens else "invalid_auth"
            return FakeResponse(401, {"error": error}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def requests_to(self, path: str, method: str | None = None) -> list[FakeRequest]:
        """Recorded requests whose path matches ``path`` (route syntax)."""
        regex = _compile(path)
        with self._lock:
            return [
                r for r in self.requests if regex.match(r.path) and (method is None or r.method == method.upper())
            ]

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests matched ``path``."""
        return len(self.requests_to(path, method))


def _normalize(reply: Reply) -> FakeResponse:
    if isinstance(reply, FakeResponse):
        return reply
    if isinstance(reply, tuple):
        if len(reply) == 2:
            return FakeResponse(reply[0], reply[1])
        return FakeResponse(reply[0], reply[1], dict(reply[2]))
    return FakeResponse(200, reply)


def _make_handler(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle on, each kept-alive request waited ~40 ms for
        # the client's delayed ACK (bench/sync_throughput.py measured 47 ms a request).
        disable_nagle_algorithm = True
        # A client that keeps an idle connection open must not pin a handler thread forever.
        timeout = 10

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            host = self.headers.get("Host") or fake.url.removeprefix("http://")
            req = FakeRequest(
                method=self.command,
                path=unquote(split.path),
                query_list=parse_qsl(split.query, keep_blank_values=True),
                headers=_lower_headers(self.headers.items()),
                body=body,
                base_url=f"http://{host}",
            )
            resp = fake.handle(req)
            payload = resp.content()
            self.send_response(resp.status)
            for name, value in resp.header_items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return _Handler


def _lower_headers(items: Iterator[tuple[str, str]] | Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in items:
        key = k.lower()
        out[key] = f"{out[key]}, {v}" if key in out else v
    return out
