-- Failed records stay recoverable, and enrichment that did not finish is resumed (issue 9, items 4-5).

-- ingest_errors: each row is one failed record with its replay state. ``status`` is 'open' until the
-- record is ingested (by a replay or by any later sync), then 'resolved' with ``resolved_at`` and the run
-- that resolved it; 'superseded' marks an older row of a record that failed again (one open row per
-- record). ``attempts``/``last_error``/``replayed_at`` record replays. ``redacted``: masking secrets
-- changed the kept record, so it cannot be re-ingested as kept (only re-fetched).
ALTER TABLE ingest_errors ADD COLUMN status text NOT NULL DEFAULT 'open'
    CHECK (status IN ('open', 'resolved', 'superseded'));
ALTER TABLE ingest_errors ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE ingest_errors ADD COLUMN last_error text;
ALTER TABLE ingest_errors ADD COLUMN replayed_at timestamptz;
ALTER TABLE ingest_errors ADD COLUMN resolved_at timestamptz;
ALTER TABLE ingest_errors ADD COLUMN resolved_run_id uuid;
ALTER TABLE ingest_errors ADD COLUMN redacted boolean NOT NULL DEFAULT false;
ALTER TABLE ingest_errors ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
UPDATE ingest_errors e SET status = 'superseded'
 WHERE external_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM ingest_errors n WHERE n.connection_id = e.connection_id AND n.stream_id = e.stream_id
       AND n.kind = e.kind AND n.external_id = e.external_id
       AND (n.created_at, n.id) > (e.created_at, e.id));
CREATE UNIQUE INDEX ingest_errors_open_record ON ingest_errors (connection_id, stream_id, kind, external_id)
    WHERE status = 'open';

-- A replay run is recorded like any run, with its own trigger.
ALTER TABLE integration_sync_runs DROP CONSTRAINT IF EXISTS integration_sync_runs_triggered_by_check;
ALTER TABLE integration_sync_runs ADD CONSTRAINT integration_sync_runs_triggered_by_check
    CHECK (triggered_by IN ('manual', 'cron', 'webhook', 'backfill', 'replay'));

-- Enrichment (embedding, graph edges) an ingest asked for, written in the same transaction as the entity
-- and deleted once that enrichment committed: what a killed process left here is finished by the next
-- run or webhook drain of the connection. Several rows per entity may exist (re-queued with new text);
-- the newest wins.
CREATE TABLE enrich_pending (
    token uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    connection_id text REFERENCES integration_connections(id) ON DELETE CASCADE,
    stream_id text,
    run_id uuid,
    entity_type text NOT NULL,
    entity_id uuid NOT NULL,
    text text NOT NULL,
    graph boolean NOT NULL,
    email text,
    queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX enrich_pending_connection ON enrich_pending (connection_id, queued_at);
