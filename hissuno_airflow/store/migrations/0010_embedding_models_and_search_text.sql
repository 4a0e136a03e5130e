-- Vectors of several models side by side: switching HISSUNO_EMBEDDER re-embeds lazily, and until an
-- entity has a vector of the current model its older ones stay (search and the graph use the current
-- model only). A model with fewer dimensions than the column is zero-padded; ``dims`` keeps its size.
ALTER TABLE embeddings DROP CONSTRAINT IF EXISTS embeddings_entity_type_entity_id_key;
ALTER TABLE embeddings ADD CONSTRAINT embeddings_entity_model_key UNIQUE (entity_type, entity_id, model);
ALTER TABLE embeddings ADD COLUMN dims integer NOT NULL DEFAULT 1536;

-- The text each entity was last embedded from, with its full-text vector: the lexical half of hybrid
-- search (identifiers such as "INC-4821" that no embedding model knows), the snippet shown with a
-- result, and the source of a re-embedding under another model without asking any provider again.
CREATE TABLE search_text (
    entity_type text NOT NULL,
    entity_id uuid NOT NULL,
    project_id uuid NOT NULL,
    text_hash text NOT NULL,
    body text NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_type, entity_id)
);
CREATE INDEX search_text_tsv ON search_text USING gin (tsv);
CREATE INDEX search_text_project ON search_text (project_id, entity_type);

-- Search results name their source (plugin, connection, external id): looked up by entity id.
CREATE INDEX integration_synced_records_hissuno_id ON integration_synced_records (hissuno_id);
