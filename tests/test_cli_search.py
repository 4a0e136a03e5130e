"""``hissuno search``: readable hits, ``--json`` carrying the same, lazy re-embedding after a model
switch with progress on stderr, and input errors naming their flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from hissuno_airflow import settings
from hissuno_airflow.kit.records import IssueRecord, SessionRecord
from hissuno_airflow.store import embedder as emb
from hissuno_airflow.store.ingest import StreamIngest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def cli(store, database_url, tmp_path):
    env = {**os.environ, "HISSUNO_DATABASE_URL": database_url, "HISSUNO_HOME": str(tmp_path),
           "HISSUNO_CREDENTIALS_BACKEND": "db"}
    env.pop("HISSUNO_EMBEDDER", None)  # the product's default: the offline model

    def run(*args, ok=True):
        proc = subprocess.run([sys.executable, "-m", "hissuno_airflow.cli", "search", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc
    return run


@pytest.fixture
def hashed_corpus(store, sample_connection):
    """Ingested under the hash embedder: the CLI's default model has no vector of them yet."""
    emb.set_embedder(emb.HashEmbedder())
    try:
        pid = settings.default_project_id()
        ing = StreamIngest(store, project_id=pid, connection_id=sample_connection.id, stream_id="sessions")
        ing.session(SessionRecord(external_id="chat-1", source="sample", name="Stuck after SSO", updated_at=T0,
                                  messages=[{"sender_type": "user",
                                             "content": "User is stuck in a login loop after the SSO redirect"}]))
        ing.session(SessionRecord(external_id="chat-2", source="sample", name="VAT on invoice", updated_at=T0,
                                  messages=[{"sender_type": "user", "content": "Invoice PDF is missing the VAT number"}]))
        ing.close()
        ing = StreamIngest(store, project_id=pid, connection_id=sample_connection.id, stream_id="issues")
        ing.issue(IssueRecord(external_id="INC-4821", name="Webhook deliveries duplicated",
                              description="Tracked as INC-4821: every event posts two callbacks", type="bug"))
        ing.close()
    finally:
        emb.set_embedder(None)
    return sample_connection


def test_search_reembeds_lazily_then_shows_readable_hits(cli, hashed_corpus):
    first = cli("customer cannot log in after single sign-on", "--limit", "2")
    assert "re-embedding under wordllama-l2-supercat-256: 3/3" in first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("1. [session] Stuck after SSO  (score ")
    assert "sample" in lines[1] and hashed_corpus.id in lines[1] and "chat-1" in lines[1]
    assert "login loop" in lines[2]
    again = cli("INC-4821", "--json")
    assert "re-embedding" not in again.stderr  # hash-gated: nothing left to embed
    body = json.loads(again.stdout)
    assert body["model"] == "wordllama-l2-supercat-256"
    top = body["results"][0]
    assert top["kind"] == "issue" and top["external_id"] == "INC-4821" and "«INC-4821»" in top["snippet"]
    assert top["plugin_id"] == "sample" and top["connection_id"] == hashed_corpus.id and top["score"] > 0
    assert set(top) == {"kind", "id", "title", "snippet", "score", "similarity", "plugin_id", "connection_id",
                        "connection_label", "external_id", "url"}
    only = json.loads(cli("login", "--kind", "issue", "--json").stdout)["results"]
    assert {h["kind"] for h in only} <= {"issue"}


def test_search_input_errors_name_the_flag(cli, hashed_corpus):
    proc = cli("x", "--since", "yesterday", ok=False)
    assert proc.returncode == 2 and "--since: expected an ISO 8601" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("x", "--project", "nope", ok=False)
    assert proc.returncode == 2 and "--project" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("x", "--limit", "500", ok=False)
    assert proc.returncode == 2 and "limit: expected 1 to 100" in proc.stderr
