"""Migrations are idempotent and the schema enforces its uniqueness rules."""

from __future__ import annotations

import psycopg
import pytest

from hissuno_airflow.store import migrate
from tests.fixtures.store import scratch_database

PROJECT = "00000000-0000-0000-0000-000000000001"


def test_migrate_is_idempotent(database_url):
    assert migrate.migrate(database_url) == []
    assert migrate.current_version(database_url) == migrate.available()[-1][0]


def test_contract_tables_exist(database_url):
    names = ("integration_connections integration_streams integration_sync_runs integration_synced_records "
             "webhook_events ingest_errors sessions session_messages contacts companies issues "
             "knowledge_sources knowledge_chunks embeddings entity_relationships").split()
    with psycopg.connect(database_url) as c:
        rows = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        cols = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns"
                                         " WHERE table_name = 'integration_synced_records'")}
        idx = [r[0] for r in c.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'embeddings'")]
    assert set(names) <= rows
    assert {"connection_id", "stream_id", "external_id", "hissuno_id", "hissuno_kind"} <= cols
    assert any("hnsw" in d and "vector_cosine_ops" in d for d in idx)


def test_the_synced_record_key_is_one_unique_index_that_still_refuses_a_second_row(store, sample_connection):
    """Migration 0014 dropped the second unique index on the same four columns: the primary key alone
    keeps (connection, stream, kind, external id) unique."""
    with store.connection() as c:
        unique = [r["indexname"] for r in c.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'integration_synced_records'"
            " AND indexdef LIKE 'CREATE UNIQUE%%'")]
        row = (sample_connection.id, "sessions", "e1", "00000000-0000-0000-0000-0000000000aa", "sessions", "h")
        sql = ("INSERT INTO integration_synced_records (connection_id, stream_id, external_id, hissuno_id,"
               " hissuno_kind, content_hash) VALUES (%s, %s, %s, %s, %s, %s)")
        c.execute(sql, row)
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(sql, row)
    assert unique == ["integration_synced_records_pkey"]


def test_unique_contact_email_and_company_domain_case_insensitive(store):
    with store.connection() as c:
        c.execute("INSERT INTO contacts (project_id, name, email) VALUES (%s, 'a', 'A@x.com')", (PROJECT,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO contacts (project_id, name, email) VALUES (%s, 'b', 'a@X.COM')", (PROJECT,))
    with store.connection() as c:
        c.execute("INSERT INTO companies (project_id, name, domain) VALUES (%s, 'a', 'Acme.com')", (PROJECT,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO companies (project_id, name, domain) VALUES (%s, 'b', 'acme.COM')", (PROJECT,))


def test_concurrent_migrations_apply_once(database_url):
    """Two processes migrating an empty database at once: the advisory lock serialises them."""
    import concurrent.futures

    base = database_url
    name = "hissuno_migrate_race"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    url = base.replace("/hissuno?", f"/{name}?")
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: migrate.migrate(url), range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migrate.available())]


def test_an_opened_pool_is_closed_before_interpreter_shutdown(database_url):
    # Left to the pool's __del__, Python 3.13 cannot join its worker threads at shutdown and every
    # process (a CLI call, an Airflow task) hangs five seconds on exit.
    import subprocess
    import sys

    code = (
        "import atexit, sys\n"
        "from hissuno_airflow.store.db import Store\n"
        f"s = Store({database_url!r}); s.open()\n"
        "with s.connection() as c: c.execute('SELECT 1')\n"
        "assert not s.pool.closed\n"
        "atexit._run_exitfuncs()\n"
        "sys.exit(0 if s.pool.closed else 3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_padded_vectors_of_an_older_store_become_their_models_size(database_url, monkeypatch):
    """Migration 0012 on a store with data: each vector cut to its ``dims`` (padding only ever held zeros),
    an HNSW index per (type, size) present, and nearest-neighbour order unchanged."""
    with scratch_database(database_url, "mig12") as url:
        steps = migrate.available()
        monkeypatch.setattr(migrate, "available", lambda: [s for s in steps if s[0] < "0012"])
        migrate.migrate(url)
        with psycopg.connect(url) as c:
            c.execute("INSERT INTO projects (id, name) VALUES (%s, 'p') ON CONFLICT DO NOTHING", (PROJECT,))
            for k, (x, y) in enumerate([(1.0, 0.0), (0.8, 0.6), (0.0, 1.0)]):
                padded = "[" + ",".join([str(x), str(y)] + ["0"] * 1534) + "]"
                c.execute("INSERT INTO embeddings (project_id, entity_type, entity_id, model, text_hash, embedding,"
                          " dims) VALUES (%s, 'session', %s, 'old-model', 'h', %s::vector, 2)",
                          (PROJECT, f"00000000-0000-0000-0000-00000000000{k}", padded))
        monkeypatch.undo()
        assert "0012_native_dimension_vectors" in migrate.migrate(url)
        with psycopg.connect(url) as c:
            dims = {r[0] for r in c.execute("SELECT vector_dims(embedding) FROM embeddings")}
            indexes = {r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings'")}
            c.execute("SET enable_seqscan = off")
            nearest = [r[0] for r in c.execute(
                "SELECT entity_id::text FROM embeddings WHERE entity_type = 'session' AND dims = 2"
                " ORDER BY embedding::vector(2) <=> '[0.9,0.5]'::vector(2) LIMIT 3")]
            plan = " ".join(r[0] for r in c.execute(
                "EXPLAIN SELECT entity_id FROM embeddings WHERE entity_type = 'session' AND dims = 2"
                " ORDER BY embedding::vector(2) <=> '[0.9,0.5]'::vector(2) LIMIT 3"))
        assert dims == {2}
        assert {"embeddings_hnsw_session_2", "embeddings_hnsw_session_256", "embeddings_hnsw_contact_256"} <= indexes
        assert "embeddings_hnsw_session_2" in plan
        assert nearest[0].endswith("1")  # (0.8, 0.6) is nearest to (0.9, 0.5)
