-- A connection the provider refused (revoked or rotated key, a refresh refused): the reason, until a
-- reconnect or a successful run clears it. Shown as "reconnect needed" by the CLI, the API and the page.
ALTER TABLE integration_connections ADD COLUMN IF NOT EXISTS auth_error text;
ALTER TABLE integration_connections ADD COLUMN IF NOT EXISTS auth_error_at timestamptz;
