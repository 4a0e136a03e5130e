"""OAuth refresh: single flight across processes, rotated refresh tokens saved, failures are loud."""

from __future__ import annotations

import multiprocessing as mp
import os
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from hissuno_airflow import registry
from hissuno_airflow.kit.errors import ProviderAuthError
from hissuno_airflow.runtime.credentials import credential_store
from hissuno_airflow.runtime.refresh import ensure_fresh

from . import oauth_probe
from .conftest import make_connection

PROCESSES = 8


class _Source:
    """The connection's own credential store, as the runtime wires it."""

    def __init__(self, store, connection):
        self.store, self.connection = store, connection

    def load(self):
        return credential_store(self.store, "db").load(self.connection)

    def save(self, creds):
        credential_store(self.store, "db").save(self.connection, creds)


@pytest.fixture
def oauth_plugin(monkeypatch):
    registry.unregister("afoauth")
    registry.register(oauth_probe.plugin, source="tests")
    monkeypatch.setenv("AFOAUTH_CLIENT_ID", oauth_probe.CLIENT_ID)
    monkeypatch.setenv("AFOAUTH_CLIENT_SECRET", oauth_probe.CLIENT_SECRET)
    yield oauth_probe.plugin
    registry.unregister("afoauth")


def _expired(refresh_token):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return {"access_token": "expired-access", "refresh_token": refresh_token, "expires_at": past}


def _worker(connection_id, barrier, results):
    from hissuno_airflow import registry as reg
    from hissuno_airflow.store import connections as repo
    from hissuno_airflow.store.db import Store
    from tests.airflow import oauth_probe as op

    reg.register(op.plugin, source="tests")
    store = Store(os.environ["HISSUNO_DATABASE_URL"], min_size=1, max_size=2)
    try:
        conn = repo.get_connection(store, connection_id)
        source = _Source(store, conn)
        barrier.wait(timeout=60)
        creds = ensure_fresh(op.plugin, conn, source, store)
        # Use the credentials against the provider's API.
        status = httpx.get(os.environ["HISSUNO_AFOAUTH_AUTH_URL"] + "/me", trust_env=False,
                           headers={"Authorization": f"Bearer {creds['access_token']}"}).status_code
        results.put((os.getpid(), status, creds.get("refresh_token")))
    except Exception as exc:
        results.put((os.getpid(), repr(exc), None))
    finally:
        store.close()


def test_eight_processes_refresh_once(store, oauth_plugin, monkeypatch):
    with oauth_probe.TokenServer("refresh-0") as fake:
        monkeypatch.setenv("HISSUNO_AFOAUTH_AUTH_URL", fake.url)
        conn = make_connection(store, "afoauth")
        credential_store(store, "db").save(conn, _expired("refresh-0"))

        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(conn.id, barrier, results)) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)

        assert [o[1] for o in outcomes] == [200] * PROCESSES, outcomes
        assert fake.count("/oauth/token") == 1 and fake.refusals == []
        saved = credential_store(store, "db").load(conn)
        assert [saved["refresh_token"]] == fake.live_refresh_tokens == ["refresh-1"]
        assert fake.used_refresh_tokens == {"refresh-0"}
        assert saved["access_token"] == "access-1"
        assert datetime.fromisoformat(saved["expires_at"]) > datetime.now(UTC) + timedelta(minutes=50)


def test_valid_token_is_not_refreshed_and_force_refreshes_once(store, oauth_plugin, monkeypatch):
    with oauth_probe.TokenServer("refresh-0") as fake:
        monkeypatch.setenv("HISSUNO_AFOAUTH_AUTH_URL", fake.url)
        conn = make_connection(store, "afoauth")
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        source = _Source(store, conn)
        source.save({"access_token": "expired-access", "refresh_token": "refresh-0", "expires_at": future})
        assert ensure_fresh(oauth_plugin, conn, source, store)["access_token"] == "expired-access"
        assert fake.count("/oauth/token") == 0
        # A 401 despite a valid-looking token: one forced refresh.
        assert ensure_fresh(oauth_plugin, conn, source, store, force=True)["access_token"] == "access-1"
        assert fake.count("/oauth/token") == 1


def test_refused_refresh_fails_clearly_without_secrets(store, oauth_plugin, monkeypatch):
    with oauth_probe.TokenServer("refresh-current") as fake:
        monkeypatch.setenv("HISSUNO_AFOAUTH_AUTH_URL", fake.url)
        conn = make_connection(store, "afoauth")
        source = _Source(store, conn)
        source.save(_expired("refresh-stale-secret"))
        with pytest.raises(ProviderAuthError) as err:
            ensure_fresh(oauth_plugin, conn, source, store)
        text = str(err.value)
        assert "invalid_grant" in text and "reconnect" in text
        assert "refresh-stale-secret" not in text and oauth_probe.CLIENT_SECRET not in text
        assert source.load()["refresh_token"] == "refresh-stale-secret"
        assert [r["error"] for r in fake.refusals] == ["invalid_grant"]


def test_a_401_during_a_sync_forces_one_refresh_and_the_run_succeeds(store, oauth_plugin, monkeypatch):
    from hissuno_airflow.runtime.streams import enable_stream
    from hissuno_airflow.runtime.sync import run_stream_sync

    with oauth_probe.TokenServer("refresh-0") as fake:
        monkeypatch.setenv("HISSUNO_AFOAUTH_AUTH_URL", fake.url)
        conn = make_connection(store, "afoauth")
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        # Looks valid for an hour, but the provider revoked it: only a 401 can tell.
        credential_store(store, "db").save(conn, {"access_token": "revoked-access", "refresh_token": "refresh-0",
                                                  "expires_at": future})
        enable_stream(store, conn.id, "me")
        result = run_stream_sync(conn.id, "me", store=store)
        assert result.status == "success", result.error
        assert result.counts["synced"] == 1 and fake.refreshes == 1
        saved = credential_store(store, "db").load(conn)
        assert (saved["access_token"], saved["refresh_token"]) == ("access-1", "refresh-1")
        # A provider that keeps refusing the fresh token fails the run instead of looping.
        fake.deny_api()
        again = run_stream_sync(conn.id, "me", store=store)
        assert again.status == "error" and "401" in again.error and fake.refreshes == 2
        assert "access-" not in again.error and "refresh-" not in again.error
