-- Search leaves out deleted entities (``enrich._DELETED``: NOT EXISTS a row of the entity's table with that
-- id and deleted_at set). Without an index on the deleted ones, every vector lookup of search read the
-- whole table for them: at 100,000 records, 14 ms of the 19.5 ms of one session lookup (bench/search_latency.py)
-- was a sequential scan of 60,000 sessions finding none. A partial index holds only the deleted ids
-- (few, usually none), so the anti-join reads it instead.
CREATE INDEX IF NOT EXISTS sessions_deleted_ids ON sessions (id) WHERE deleted_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS issues_deleted_ids ON issues (id) WHERE deleted_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS knowledge_sources_deleted_ids ON knowledge_sources (id) WHERE deleted_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS contacts_deleted_ids ON contacts (id) WHERE deleted_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS companies_deleted_ids ON companies (id) WHERE deleted_at IS NOT NULL;
