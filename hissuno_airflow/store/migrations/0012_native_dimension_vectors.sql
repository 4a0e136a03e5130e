-- Vectors at their model's own size instead of zero-padded to 1536. The default model has 256
-- dimensions: padding made every vector six times its bytes and every index build and nearest-neighbour
-- distance six times the work (a first sync of 20,000 sessions spent most of its database time there).
-- ``embedding`` loses its fixed size; each (entity type, size) pair gets a partial HNSW index over
-- ``embedding::vector(<size>)`` (an HNSW index needs one size), which ``store/enrich.py`` builds when a
-- model of a new size first writes and which every vector query names through the same expression.
DROP INDEX IF EXISTS embeddings_hnsw_session;
DROP INDEX IF EXISTS embeddings_hnsw_contact;
DROP INDEX IF EXISTS embeddings_hnsw_company;
DROP INDEX IF EXISTS embeddings_hnsw_issue;
DROP INDEX IF EXISTS embeddings_hnsw_knowledge_source;
DROP INDEX IF EXISTS embeddings_hnsw_knowledge_chunk;
ALTER TABLE embeddings ALTER COLUMN embedding TYPE vector USING subvector(embedding, 1, dims);
DO $$
DECLARE
    t text;
    d integer;
BEGIN
    -- The indexes of the vectors already stored (a store upgraded with data); an empty store gets its
    -- indexes from the first enrichment.
    FOR t, d IN SELECT DISTINCT entity_type, dims FROM embeddings LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON embeddings USING hnsw ((embedding::vector(%s))'
                       ' vector_cosine_ops) WHERE entity_type = %L AND dims = %s',
                       'embeddings_hnsw_' || t || '_' || d, d, t, d);
    END LOOP;
END $$;
