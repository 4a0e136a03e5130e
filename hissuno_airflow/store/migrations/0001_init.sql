-- hissuno-airflow schema v1. Timestamps are timestamptz (UTC); ids are uuid unless they appear in
-- Airflow names (connections use short text ids because they end up in DAG ids and conn ids).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE projects (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO projects (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'Default project');

CREATE TABLE integration_connections (
    id text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]*$'),
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    plugin_id text NOT NULL,
    external_account_id text NOT NULL,
    account_label text NOT NULL,
    credentials_backend text NOT NULL DEFAULT 'db' CHECK (credentials_backend IN ('db', 'airflow')),
    credentials_ref text,
    credentials_enc bytea,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, plugin_id, external_account_id)
);
CREATE INDEX ON integration_connections (plugin_id, external_account_id);

CREATE TABLE integration_streams (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    connection_id text NOT NULL REFERENCES integration_connections(id) ON DELETE CASCADE,
    plugin_id text NOT NULL,
    stream_id text NOT NULL,
    stream_kind text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    frequency text NOT NULL DEFAULT 'manual' CHECK (frequency IN ('manual', '1h', '6h', '24h', 'webhook')),
    filter_config jsonb NOT NULL DEFAULT '{}'::jsonb,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_sync_at timestamptz,
    last_sync_status text CHECK (last_sync_status IN ('in_progress', 'success', 'error', 'cancelled')),
    last_sync_error text,
    last_sync_counts jsonb,
    next_sync_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (connection_id, stream_id)
);
CREATE INDEX ON integration_streams (enabled, frequency, next_sync_at);

CREATE TABLE integration_sync_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    connection_id text NOT NULL REFERENCES integration_connections(id) ON DELETE CASCADE,
    plugin_id text NOT NULL,
    stream_id text,
    triggered_by text NOT NULL CHECK (triggered_by IN ('manual', 'cron', 'webhook', 'backfill')),
    sync_mode text NOT NULL DEFAULT 'incremental' CHECK (sync_mode IN ('incremental', 'full')),
    status text NOT NULL DEFAULT 'in_progress' CHECK (status IN ('in_progress', 'success', 'error', 'cancelled')),
    counts jsonb NOT NULL DEFAULT '{"found":0,"synced":0,"skipped":0,"failed":0}'::jsonb,
    error_message text,
    cursor_before timestamptz,
    cursor_after timestamptz,
    window_start timestamptz,
    window_end timestamptz,
    external_run_id text,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX ON integration_sync_runs (connection_id, stream_id, started_at DESC);

CREATE TABLE integration_synced_records (
    connection_id text NOT NULL REFERENCES integration_connections(id) ON DELETE CASCADE,
    stream_id text NOT NULL,
    external_id text NOT NULL,
    hissuno_id uuid NOT NULL,
    hissuno_kind text NOT NULL CHECK (hissuno_kind IN ('sessions', 'contacts', 'companies', 'issues', 'knowledge')),
    content_hash text NOT NULL,
    source_updated_at timestamptz,
    synced_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, stream_id, hissuno_kind, external_id)
);
CREATE UNIQUE INDEX integration_synced_records_key ON integration_synced_records (connection_id, stream_id, external_id, hissuno_kind);

CREATE TABLE webhook_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plugin_id text NOT NULL,
    connection_id text NOT NULL REFERENCES integration_connections(id) ON DELETE CASCADE,
    event_id text NOT NULL,
    event_type text,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    payload jsonb,
    raw_body bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    attempts integer NOT NULL DEFAULT 0,
    error text,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    UNIQUE (plugin_id, connection_id, event_id)
);
CREATE INDEX ON webhook_events (connection_id, status, received_at);

CREATE TABLE ingest_errors (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    connection_id text REFERENCES integration_connections(id) ON DELETE CASCADE,
    stream_id text,
    run_id uuid,
    kind text NOT NULL,
    external_id text,
    reason text NOT NULL,
    record jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON ingest_errors (connection_id, stream_id, created_at DESC);

CREATE TABLE companies (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name text NOT NULL,
    domain text NOT NULL,
    industry text,
    country text,
    employee_count integer,
    notes text,
    custom_fields jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_archived boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX companies_project_domain ON companies (project_id, lower(domain));

CREATE TABLE contacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    company_id uuid REFERENCES companies(id) ON DELETE SET NULL,
    name text NOT NULL,
    email text NOT NULL,
    phone text,
    title text,
    notes text,
    custom_fields jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_archived boolean NOT NULL DEFAULT false,
    last_contacted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX contacts_project_email ON contacts (project_id, lower(email));

CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    contact_id uuid REFERENCES contacts(id) ON DELETE SET NULL,
    name text,
    description text,
    status text NOT NULL DEFAULT 'closed',
    source text NOT NULL,
    session_type text NOT NULL DEFAULT 'chat',
    tags text[] NOT NULL DEFAULT '{}',
    message_count integer NOT NULL DEFAULT 0,
    user_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    custom_fields jsonb NOT NULL DEFAULT '{}'::jsonb,
    first_message_at timestamptz,
    last_activity_at timestamptz,
    is_archived boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON sessions (project_id, last_activity_at DESC);

CREATE TABLE session_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    project_id uuid NOT NULL,
    position integer NOT NULL,
    sender_type text NOT NULL CHECK (sender_type IN ('user', 'ai', 'human_agent', 'system')),
    sender_name text,
    content text NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (session_id, position)
);

CREATE TABLE issues (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    type text NOT NULL CHECK (type IN ('bug', 'feature_request', 'change_request')),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ready', 'in_progress', 'resolved', 'closed')),
    priority text NOT NULL DEFAULT 'low' CHECK (priority IN ('low', 'medium', 'high')),
    custom_fields jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_archived boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE knowledge_sources (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    parent_id uuid REFERENCES knowledge_sources(id) ON DELETE SET NULL,
    name text,
    description text,
    type text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'analyzing', 'done', 'failed')),
    url text,
    content text,
    origin text,
    custom_fields jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled boolean NOT NULL DEFAULT true,
    analyzed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE knowledge_chunks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source_id uuid NOT NULL REFERENCES knowledge_sources(id) ON DELETE CASCADE,
    project_id uuid NOT NULL,
    chunk_index integer NOT NULL,
    chunk_text text NOT NULL,
    start_line integer NOT NULL,
    end_line integer NOT NULL,
    section_heading text,
    parent_headings text[] NOT NULL DEFAULT '{}',
    UNIQUE (source_id, chunk_index)
);

-- One vector per embedded thing; entity_type 'knowledge_chunk' covers chunks.
CREATE TABLE embeddings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL,
    entity_type text NOT NULL CHECK (entity_type IN ('session', 'contact', 'company', 'issue', 'knowledge_source', 'knowledge_chunk')),
    entity_id uuid NOT NULL,
    model text NOT NULL,
    text_hash text NOT NULL,
    embedding vector(1536) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (entity_type, entity_id)
);
CREATE INDEX embeddings_hnsw ON embeddings USING hnsw (embedding vector_cosine_ops);
CREATE INDEX ON embeddings (project_id, entity_type, model);

CREATE TABLE entity_relationships (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    source_type text NOT NULL,
    source_id uuid NOT NULL,
    target_type text NOT NULL,
    target_id uuid NOT NULL,
    strategy text NOT NULL CHECK (strategy IN ('semantic', 'text_match', 'email_domain', 'metadata_email', 'programmatic', 'manual')),
    similarity real,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, source_type, source_id, target_type, target_id),
    CHECK (NOT (source_type = target_type AND source_id = target_id))
);
CREATE INDEX ON entity_relationships (target_type, target_id);

CREATE TABLE oauth_states (
    nonce text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
