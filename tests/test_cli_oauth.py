"""``hissuno connect <oauth2 plugin>`` end to end: authorize URL, one redirect to a loopback listener,
code exchange through ``finish_callback``, connection stored; and each refusal writes nothing.

The command runs in-process (``cli.main`` in a thread, so the test plugin registered here is known to
it); a test "browser" follows the printed URL to the fake authorization server, which redirects to the
command's listener on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from hissuno_airflow import cli
from hissuno_airflow.runtime.credentials import load_credentials
from hissuno_airflow.store import connections as repo
from tests.fixtures.web import Web, count, register_test_plugins
from tests.web.plugins import FakeAuthServer


class _Lines(io.TextIOBase):
    """A stderr that hands each complete line to the test as it is written."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.text = ""
        self._buf = ""

    def write(self, s: str) -> int:
        self.text += s
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self.lines.put(line)
        return len(s)


@dataclass
class Run:
    """One ``hissuno`` invocation running in a thread."""

    thread: threading.Thread
    stderr: _Lines
    stdout: io.StringIO
    result: dict[str, int] = field(default_factory=dict)

    def authorize_url(self, timeout: float = 30) -> str:
        while True:
            try:
                line = self.stderr.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no authorize URL printed; stderr so far:\n{self.stderr.text}") from None
            if line.startswith("http"):
                return line

    def finish(self, timeout: float = 60) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the command did not end"
        return self.result["rc"]


@pytest.fixture
def auth_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAuthServer]:
    register_test_plugins()
    fake = FakeAuthServer()
    with fake:
        monkeypatch.setenv("HISSUNO_WEBAUTH_AUTH_URL", fake.url)
        monkeypatch.setenv("HISSUNO_WEBAUTH_API_URL", fake.url)
        monkeypatch.setenv("WEBAUTH_CLIENT_ID", fake.client_id)
        monkeypatch.setenv("WEBAUTH_CLIENT_SECRET", fake.client_secret)
        yield fake


@pytest.fixture
def hissuno(store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    runs: list[Run] = []

    def start(*argv: str) -> Run:
        err, out = _Lines(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        monkeypatch.setattr(sys, "stdout", out)
        run = Run(threading.Thread(target=lambda: run.result.setdefault("rc", cli.main(list(argv))), daemon=True),
                  err, out)
        run.thread.start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.thread.join(30)


def _browser(url: str) -> str:
    """The user at the provider: consent (the fake answers at once); returns where it redirects."""
    r = httpx.get(url, follow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def test_connect_completes_on_the_loopback_redirect(hissuno: Any, auth_server: FakeAuthServer, store: Any) -> None:
    run = hissuno("connect", "webauth", "--json")
    url = run.authorize_url()
    q = parse_qs(urlsplit(url).query)
    redirect = urlsplit(q["redirect_uri"][0])
    assert (redirect.scheme, redirect.hostname, redirect.path) == ("http", "127.0.0.1", "/callback")
    assert redirect.port and q["code_challenge_method"] == ["S256"] and q["code_challenge"][0]
    location = _browser(url)
    assert location.startswith(f"http://127.0.0.1:{redirect.port}/callback?code=")
    # A request to another path (a browser's favicon) is not the redirect and does not end the wait.
    assert httpx.get(f"http://127.0.0.1:{redirect.port}/favicon.ico", timeout=10).status_code == 404
    page = httpx.get(location, timeout=30)
    assert page.status_code == 200 and "Connected" in page.text
    assert run.finish() == 0, run.stderr.text
    out = json.loads(run.stdout.getvalue())
    row = repo.get_connection(store, out["connection_id"])
    assert (row.plugin_id, row.external_account_id, row.account_label) == ("webauth", "org-42", "Acme Org")
    creds = load_credentials(store, row)
    assert creds["access_token"] in auth_server.token_accounts and creds["refresh_token"] in auth_server.refresh_tokens
    code = parse_qs(urlsplit(location).query)["code"][0]
    printed = run.stderr.text + run.stdout.getvalue()
    assert code not in printed and creds["access_token"] not in printed and creds["refresh_token"] not in printed
    # One request only: the listener is gone.
    with pytest.raises(httpx.ConnectError):
        httpx.get(location, timeout=5)
    assert count(store, "integration_connections") == 1


def test_provider_refusal_is_a_clear_error_and_saves_nothing(hissuno: Any, auth_server: FakeAuthServer,
                                                             store: Any) -> None:
    auth_server.deny_consent = True
    run = hissuno("connect", "webauth", "--json")
    page = httpx.get(_browser(run.authorize_url()), timeout=30)
    assert page.status_code == 400 and "access_denied" in page.text
    assert run.finish() != 0
    assert "connecting webauth failed: the provider answered access_denied" in run.stderr.text
    assert run.stdout.getvalue() == ""
    assert count(store, "integration_connections") == 0


def test_a_redirect_with_a_foreign_state_is_refused_and_saves_nothing(hissuno: Any, auth_server: FakeAuthServer,
                                                                      store: Any) -> None:
    run = hissuno("connect", "webauth")
    location = urlsplit(_browser(run.authorize_url()))
    q = {k: v[0] for k, v in parse_qs(location.query).items()}
    forged = {**q, "state": q["state"][:-6] + ("A" if q["state"][-6] != "A" else "B") + q["state"][-5:]}
    page = httpx.get(f"http://{location.netloc}{location.path}?{urlencode(forged)}", timeout=30)
    assert page.status_code == 400 and "invalid_state" in page.text
    assert run.finish() != 0
    assert "the redirect carried a state this command did not issue; nothing was saved" in run.stderr.text
    assert q["code"] in auth_server.codes  # the code was never exchanged
    assert count(store, "integration_connections") == 0


def test_no_redirect_in_time_is_a_timeout(hissuno: Any, auth_server: FakeAuthServer, store: Any) -> None:
    run = hissuno("connect", "webauth", "--timeout", "1")
    url = run.authorize_url()
    assert run.finish() != 0
    port = urlsplit(parse_qs(urlsplit(url).query)["redirect_uri"][0]).port
    assert f"no redirect reached http://127.0.0.1:{port}/callback within 1 s; nothing was saved" in run.stderr.text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/callback", timeout=5)
    assert count(store, "integration_connections") == 0


def test_a_fixed_port_is_used_and_a_busy_one_is_named(hissuno: Any, auth_server: FakeAuthServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        run = hissuno("connect", "webauth", "--port", str(busy))
        assert run.finish() == 2
        assert f"--port: cannot listen on 127.0.0.1:{busy}" in run.stderr.text
    run = hissuno("connect", "webauth", "--port", str(busy), "--timeout", "1")
    assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{busy}%2Fcallback" in run.authorize_url()
    assert run.finish() != 0


def test_no_listen_binds_the_state_to_the_web_user_and_the_public_callback_finishes_it(
    hissuno: Any, auth_server: FakeAuthServer, web: Web, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HISSUNO_PUBLIC_URL", web.url)
    run = hissuno("connect", "webauth", "--no-listen", "--json")
    assert run.finish() == 0, run.stderr.text
    url = json.loads(run.stdout.getvalue())["authorize_url"]
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == [f"{web.url}/api/plugins/oauth/webauth/callback"]
    location = _browser(url)
    # The browser returns logged in as the default web user (``admin``, the serve token's identity).
    r = httpx.get(location, cookies={"hissuno_token": web.client.headers["Authorization"][7:]},
                  follow_redirects=False, timeout=30)
    back = parse_qs(urlsplit(r.headers["Location"]).query)
    assert back.get("connected") == ["1"], back
    assert repo.get_connection(web.store, back["connection"][0]).account_label == "Acme Org"
