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
    pairs text[];
    pair text;
    t text;
    d integer;
BEGIN
    -- The indexes of the vectors already stored (a store upgraded with data), and those of the default
    -- model's size (wordllama, 256) so that a new store has them before its first sync; a model of another
    -- size gets its own from its first enrichment. (Read into an array first: an index cannot be built on
    -- a table an open loop query still reads.)
    SELECT array_agg(p) INTO pairs FROM (
        SELECT DISTINCT entity_type || ':' || dims AS p FROM embeddings
        UNION SELECT unnest(ARRAY['session', 'contact', 'company', 'issue', 'knowledge_source',
                                  'knowledge_chunk']) || ':256'
    ) s;
    FOREACH pair IN ARRAY pairs LOOP
        t := split_part(pair, ':', 1);
        d := split_part(pair, ':', 2)::integer;
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON embeddings USING hnsw ((embedding::vector(%s))'
                       ' vector_cosine_ops) WHERE entity_type = %L AND dims = %s',
                       'embeddings_hnsw_' || t || '_' || d, d, t, d);
    END LOOP;
END $$;
