"""Two API-server replicas behind one load balancer (issue 15, docs/deploying.md): two ``hissuno serve``
processes on different ports, each with its own ``HISSUNO_HOME`` (as on two hosts), against one store.

An OAuth flow started on one replica finishes on the other (the state lives in the store, sealed with the
shared ``HISSUNO_SECRET_KEY``), and webhook deliveries split across both, some delivered to both, are each
stored once and handled once (the inbox rows are locked per event, so two replicas draining one stream
never take the same event).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hissuno_airflow import registry
from hissuno_airflow.runtime.streams import enable_stream
from hissuno_airflow.store import connections as repo
from tests.fakes import linear as fakes
from tests.fakes.linear import TEAMS, FakeLinear
from tests.fakes.webhooks import Signer
from tests.fixtures.cli import standalone_env
from tests.fixtures.web import count

ADMIN = "scale-out-admin-token-0123456789"
LB = "http://lb.invalid"
"""The public URL both replicas are configured with; the test plays the load balancer behind it."""
SECRET = "lin_wh_scale_out_secret_01"
ENG = TEAMS[0]["id"]
EVENTS = 40
DUPLICATES = 10


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """One ``hissuno serve`` process."""

    def __init__(self, env: dict[str, str], home: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/hissuno"
        self.log = open(os.path.join(home, "serve.log"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hissuno_airflow.cli", "serve", "--port", str(self.port)],
            env={**env, "HISSUNO_HOME": home}, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"hissuno serve exited: {self.log.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("hissuno serve did not answer in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def test_a_process_with_another_secret_key_is_refused(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hissuno_airflow.kit.errors import NotConfigured
    from hissuno_airflow.store.sealed import check_secret_key

    check_secret_key(store)  # the first records its key's fingerprint
    check_secret_key(store)  # the same key again: fine
    monkeypatch.setenv("HISSUNO_SECRET_KEY", "a-key-of-this-host-only-0123456789")
    with pytest.raises(NotConfigured, match="same HISSUNO_SECRET_KEY"):
        check_secret_key(store)


@pytest.fixture
def replicas(store: Any, database_url: str, tmp_path: Any, serve_fake: Any,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeLinear, Replica, Replica]]:
    fake = fakes.serve(monkeypatch, serve_fake, 6)
    env = {**standalone_env(), "HISSUNO_DATABASE_URL": database_url, "HISSUNO_ADMIN_TOKEN": ADMIN,
           "HISSUNO_PUBLIC_URL": LB, "HISSUNO_CREDENTIALS_BACKEND": "db",
           "HISSUNO_LINEAR_API_URL": fake.url, "HISSUNO_LINEAR_AUTH_URL": fake.url,
           "LINEAR_CLIENT_ID": fake.client_id, "LINEAR_CLIENT_SECRET": fake.client_secret}
    assert env["HISSUNO_SECRET_KEY"], "every replica needs the same key (conftest sets one)"
    homes = [tmp_path / "host-a", tmp_path / "host-b"]
    for home in homes:
        home.mkdir()
    a, b = (Replica(env, str(home)) for home in homes)
    try:
        a.wait_ready()
        b.wait_ready()
        yield fake, a, b
    finally:
        a.stop()
        b.stop()


def _via_lb(location: str, replica: Replica) -> str:
    """The load balancer's choice: the request for the public URL goes to ``replica``."""
    assert location.startswith(LB + "/hissuno/"), location
    return replica.url + location.removeprefix(LB + "/hissuno")


@pytest.mark.slow
def test_oauth_started_on_one_replica_finishes_on_the_other_and_webhooks_are_handled_once(
        store: Any, replicas: tuple[FakeLinear, Replica, Replica]) -> None:
    fake, a, b = replicas

    # -- OAuth: the authorize URL from replica A, the provider's redirect back lands on replica B. ----------
    started = httpx.post(a.url + "/api/plugins/linear/connect", json={}, headers=_auth(), timeout=30)
    assert started.status_code == 200, started.text
    consent = httpx.get(started.json()["authorize_url"], follow_redirects=False, timeout=10)
    assert consent.status_code == 302, consent.text
    back = httpx.get(_via_lb(consent.headers["Location"], b), cookies={"hissuno_token": ADMIN},
                     follow_redirects=False, timeout=30)
    assert back.status_code == 302, back.text
    outcome = parse_qs(urlsplit(back.headers["Location"]).query)
    assert outcome.get("connected") == ["1"], outcome
    cid = outcome["connection"][0]
    assert repo.get_connection(store, cid).plugin_id == "linear"
    # The state was single use across replicas too: the same redirect replayed on A is refused.
    replay = httpx.get(_via_lb(consent.headers["Location"], a), cookies={"hissuno_token": ADMIN},
                       follow_redirects=False, timeout=30)
    assert parse_qs(urlsplit(replay.headers["Location"]).query).get("error") == ["replayed_state"]

    # -- Webhooks split across both replicas, some delivered to both. --------------------------------
    enable_stream(store, cid, f"issues:{ENG}")
    repo.update_connection(store, cid, settings={**repo.get_connection(store, cid).settings, "webhook_secret": SECRET})
    signer = Signer(registry.get_plugin("linear").webhook_signature).with_secret(SECRET)
    issues = fake.team_issues(ENG)
    reads_before = len(fake.graphql_bodies("Issues"))
    deliveries = [signer(fake.event("update", issues[n % len(issues)]["id"]), timestamp=time.time(),
                         event_id=f"delivery-{n}") for n in range(EVENTS)]
    sent = [(deliveries[n], (a, b)[n % 2]) for n in range(EVENTS)]
    sent += [(deliveries[n], (b, a)[n % 2]) for n in range(DUPLICATES)]  # the provider retried on the other
    with httpx.Client(timeout=30) as client:
        for d, replica in sent:
            r = client.post(f"{replica.url}/api/plugins/webhook/linear/{cid}", content=d.body, headers=d.headers)
            assert r.status_code == 200, r.text
    assert count(store, "webhook_events") == EVENTS

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and count(store, "webhook_events", "WHERE status = 'done'") < EVENTS:
        time.sleep(0.2)
    with store.connection() as conn:
        rows = conn.execute("SELECT event_id, status, attempts FROM webhook_events").fetchall()
    assert sorted(r["event_id"] for r in rows) == sorted(f"delivery-{n}" for n in range(EVENTS))
    assert {(r["status"], r["attempts"]) for r in rows} == {("done", 1)}, rows
    # Each event re-read its issue exactly once: no replica handled an event the other had.
    time.sleep(0.5)  # a second handling would have issued its read by now
    assert len(fake.graphql_bodies("Issues")) - reads_before == EVENTS
    assert count(store, "issues") == len(issues)


@pytest.mark.slow
def test_a_replica_without_the_shared_secret_key_refuses_to_start(
        store: Any, replicas: tuple[FakeLinear, Replica, Replica], database_url: str, tmp_path: Any) -> None:
    """A third host without ``HISSUNO_SECRET_KEY`` (so a key of its own in its home) says why and exits."""
    del replicas  # A and B up: the store has recorded their key
    env = {k: v for k, v in standalone_env().items() if k != "HISSUNO_SECRET_KEY"}
    env.update(HISSUNO_DATABASE_URL=database_url, HISSUNO_ADMIN_TOKEN=ADMIN)
    home = tmp_path / "host-c"
    home.mkdir()
    c = Replica(env, str(home))
    try:
        assert c.proc.wait(60) != 0
        c.log.seek(0)
        out = c.log.read()
        assert "same HISSUNO_SECRET_KEY" in out and "Traceback" not in out, out[-2000:]
    finally:
        c.stop()


def test_a_web_process_with_another_secret_key_answers_503_naming_the_setting(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under Airflow the routes live in the API server, which starts whatever the store says: the app
    # itself refuses to serve with a key that cannot open what the other processes sealed.
    from hissuno_airflow.store.sealed import check_secret_key
    from hissuno_airflow.web.serve import Server, build_app
    from tests.fixtures.web import ADMIN_TOKEN

    check_secret_key(store)  # another process recorded the store's key
    shared = os.environ["HISSUNO_SECRET_KEY"]
    monkeypatch.setenv("HISSUNO_SECRET_KEY", "a-key-of-this-host-only-0123456789")
    server = Server(build_app(token=ADMIN_TOKEN, store=store)).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
            for path in ("/api/plugins/catalog", "/api/connections"):
                resp = c.get(path)
                assert resp.status_code == 503, (path, resp.text)
                body = resp.json()
                assert body["field"] == "HISSUNO_SECRET_KEY" and "Traceback" not in resp.text
    finally:
        server.stop()
    monkeypatch.setenv("HISSUNO_SECRET_KEY", shared)  # the same key as the others: served
    server = Server(build_app(token=ADMIN_TOKEN, store=store)).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
            assert c.get("/api/plugins/catalog").status_code == 200
    finally:
        server.stop()
