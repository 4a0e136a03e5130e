-- What one-time set-up steps (``python3 dev.py up``) already did, so a restart never redoes them.
CREATE TABLE setup_marks (
    name text PRIMARY KEY,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
