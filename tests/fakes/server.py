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
``inject_429``, ``inject_5xx``), bearer tokens with expiry (``issue_token``, ``revoke_token``,
``check_bearer``) on an injectable clock, and ``errors`` (exceptions raised by handlers, answered as 500).
Stdlib only, besides httpx for the in-process transport.
"""

from __future__ import annotations

import base64
import json as jsonlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
    "Reply",
    "Router",
    "delete",
    "get",
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
    """A canned failure answered instead of the route, ``times`` times, when the request matches."""

    regex: re.Pattern[str]
    response: FakeResponse
    times: int = 1
    method: str | None = None
    when: Callable[[FakeRequest], bool] | None = None
    hits: int = 0

    def matches(self, req: FakeRequest) -> bool:
        """Whether this fault applies to ``req`` (and has uses left)."""
        if self.times <= 0 or not self.regex.match(req.path):
            return False
        if self.method is not None and self.method != req.method:
            return False
        return self.when is None or self.when(req)


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
                    fault.times -= 1
                    fault.hits += 1
                    return fault.response
        try:
            denied = self.check_auth(req)
            if denied is not None:
                return _normalize(denied)
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
        times: int = 1,
        method: str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` instead of the route."""
        fault = Fault(
            regex=_compile(path),
            response=FakeResponse(status, json, dict(headers or {})),
            times=times,
            method=method.upper() if method else None,
            when=when,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def inject_429(
        self,
        path: str,
        *,
        times: int = 1,
        retry_after: float | str | None = 30,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
    ) -> Fault:
        """Rate-limit matching requests, with ``Retry-After`` unless it is None."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        body = {"error": "ratelimited", "message": "Too many requests"}
        return self.inject(path, 429, times=times, json=body, headers=hdrs, method=method, when=when)

    def inject_5xx(
        self,
        path: str,
        *,
        status: int = 503,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
    ) -> Fault:
        """Fail matching requests with a server error."""
        body = {"error": "unavailable"}
        return self.inject(path, status, times=times, json=body, headers=headers, method=method, when=when)

    def issue_token(self, token: str | None = None, *, expires_in: float | None = None) -> str:
        """Accept ``token`` (random when omitted) as a bearer token, optionally expiring."""
        token = token or f"fake-{self.name}-{secrets.token_hex(12)}"
        with self._lock:
            self.tokens[token] = None if expires_in is None else self.clock() + expires_in
        return token

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
