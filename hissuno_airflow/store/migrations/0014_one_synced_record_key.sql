-- integration_synced_records had its key twice: the primary key (connection_id, stream_id, hissuno_kind,
-- external_id) and a unique index on the same four columns in another order. Both lead with
-- (connection_id, stream_id), and no query filters on the external id without the kind, so the primary key
-- serves every lookup the second index did. The second index only added to each claim (measured: 17% of its
-- cost) and to every ON CONFLICT on the key, which checked both as arbiters.
DROP INDEX IF EXISTS integration_synced_records_key;
