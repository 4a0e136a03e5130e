-- A sync run's row is its stream's lease (issue 9): at most one in_progress run per stream, enforced by
-- the database instead of a session-level advisory lock (which vanished with a PostgreSQL restart while
-- the run went on). The run renews lease_expires_at while it lives and re-checks that it is still
-- in_progress in the same transaction as each write; a run whose lease lapsed is closed as failed by
-- whoever looks next (store open, run listing, DAG parse, the next run) and may write nothing more.
ALTER TABLE integration_sync_runs ADD COLUMN lease_expires_at timestamptz;

-- Runs left in_progress by dead processes: all but the newest of a stream are closed now; the newest
-- keeps a lease from its last heartbeat, so a live run of the old code is not cut off mid-write.
UPDATE integration_sync_runs r
   SET status = 'error', completed_at = now(),
       error_message = 'run abandoned (its process stopped without finishing)'
 WHERE r.status = 'in_progress'
   AND EXISTS (SELECT 1 FROM integration_sync_runs n
                WHERE n.connection_id = r.connection_id AND n.stream_id IS NOT DISTINCT FROM r.stream_id
                  AND n.status = 'in_progress' AND (n.started_at, n.id) > (r.started_at, r.id));
UPDATE integration_sync_runs SET lease_expires_at = heartbeat_at + interval '2 minutes'
 WHERE status = 'in_progress';

CREATE UNIQUE INDEX integration_sync_runs_one_live ON integration_sync_runs (connection_id, stream_id)
    WHERE status = 'in_progress';
CREATE INDEX integration_sync_runs_leases ON integration_sync_runs (lease_expires_at)
    WHERE status = 'in_progress';
