-- webhook_events get their own stream_id column (0001 folded it into event_id as '<stream>#<id>'),
-- and sync runs keep live progress so a page can follow a run executing in another process.
ALTER TABLE webhook_events ADD COLUMN stream_id text;
UPDATE webhook_events SET stream_id = split_part(event_id, '#', 1),
                          event_id = substr(event_id, length(split_part(event_id, '#', 1)) + 2)
 WHERE position('#' in event_id) > 0;
UPDATE webhook_events SET stream_id = '' WHERE stream_id IS NULL;
ALTER TABLE webhook_events ALTER COLUMN stream_id SET NOT NULL;
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_plugin_id_connection_id_event_id_key;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_stream_event_key UNIQUE (connection_id, stream_id, event_id);
DROP INDEX IF EXISTS webhook_events_connection_id_status_received_at_idx;
CREATE INDEX webhook_events_inbox ON webhook_events (connection_id, stream_id, status, received_at);

ALTER TABLE integration_sync_runs ADD COLUMN progress jsonb;
