-- Soft deletes: a provider-side deletion marks the entity deleted instead of removing it, so its
-- history, messages, chunks, embeddings and graph edges stay explainable, and a provider restore
-- (re-ingesting the same external id) clears the mark again.
-- integration_synced_records.deleted_at: this (connection, stream, kind, external id) was deleted at
-- its source. An entity's own deleted_at is set once no live synced record points at it any more
-- (contacts and companies can be shared by several sources).
ALTER TABLE integration_synced_records ADD COLUMN deleted_at timestamptz;
ALTER TABLE sessions ADD COLUMN deleted_at timestamptz;
ALTER TABLE contacts ADD COLUMN deleted_at timestamptz;
ALTER TABLE companies ADD COLUMN deleted_at timestamptz;
ALTER TABLE issues ADD COLUMN deleted_at timestamptz;
ALTER TABLE knowledge_sources ADD COLUMN deleted_at timestamptz;

-- Runs count deletions next to found/synced/skipped/failed.
ALTER TABLE integration_sync_runs ALTER COLUMN counts
    SET DEFAULT '{"found":0,"synced":0,"skipped":0,"failed":0,"deleted":0}'::jsonb;
