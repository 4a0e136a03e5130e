-- One HNSW index per entity type instead of one over every vector. Graph linking asks "the nearest
-- vectors of type T" and search "the nearest sessions": over a single index whose nearest candidates
-- are mostly of the asker's own type, the filter emptied the index's candidate list, so the planner
-- compared vectors by brute force (all pairs: a first sync of 20,000 sessions took 15 minutes). A
-- partial index per type answers those questions directly; each vector still sits in one index.
DROP INDEX IF EXISTS embeddings_hnsw;
CREATE INDEX embeddings_hnsw_session ON embeddings USING hnsw (embedding vector_cosine_ops)
    WHERE entity_type = 'session';
CREATE INDEX embeddings_hnsw_contact ON embeddings USING hnsw (embedding vector_cosine_ops)
    WHERE entity_type = 'contact';
CREATE INDEX embeddings_hnsw_company ON embeddings USING hnsw (embedding vector_cosine_ops)
    WHERE entity_type = 'company';
CREATE INDEX embeddings_hnsw_issue ON embeddings USING hnsw (embedding vector_cosine_ops)
    WHERE entity_type = 'issue';
CREATE INDEX embeddings_hnsw_knowledge_source ON embeddings USING hnsw (embedding vector_cosine_ops)
    WHERE entity_type = 'knowledge_source';
CREATE INDEX embeddings_hnsw_knowledge_chunk ON embeddings USING hnsw (embedding vector_cosine_ops)
    WHERE entity_type = 'knowledge_chunk';
-- A vector(1536) (6 KB) fits in a heap page: kept inline instead of split into TOAST chunks, its
-- write skips the TOAST table and its index (new rows; existing ones move when rewritten).
ALTER TABLE embeddings ALTER COLUMN embedding SET STORAGE PLAIN;
