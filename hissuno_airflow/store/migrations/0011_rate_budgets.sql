-- Request budgets shared by every process that calls one provider account (runtime/services.py): one
-- row per (plugin, account, budget name) holding the bucket's next free slot ("theoretical arrival
-- time" of a GCRA token bucket), advanced atomically by one upsert per request (store/rate_budgets.py).
-- UNLOGGED: no WAL per request; after a crash the table is empty and each bucket starts full again,
-- which costs at most one burst.
CREATE UNLOGGED TABLE IF NOT EXISTS rate_budgets (
    plugin_id text NOT NULL,
    account text NOT NULL,
    name text NOT NULL,
    tat timestamptz NOT NULL,
    PRIMARY KEY (plugin_id, account, name)
);
