-- The generation of the membership lookup cache. Cache keys carry it, so a recompute that
-- changes many customers at once bumps it (one statement, one notification) instead of
-- notifying every changed customer; every replica then reads fresh keys.
CREATE SEQUENCE membership_cache_epoch;

-- The scheduler's bookkeeping: when the scheduled full recompute and the rollover pass last
-- ran, so several replicas run each once per interval (the row is locked while deciding).
CREATE TABLE schedule_runs (
    name          text PRIMARY KEY,
    last_run_time timestamptz NOT NULL
);
