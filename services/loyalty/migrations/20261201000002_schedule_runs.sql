-- The in-process scheduler's bookkeeping: when each scheduled job (point release, point
-- expiry, tier review) last started, so that among several replicas one starts it per
-- interval. A replica claims a job by locking its row (`FOR UPDATE SKIP LOCKED`), checking
-- the interval has passed and moving `last_run_time`, in one short transaction.
CREATE TABLE schedule_runs (
    name          text PRIMARY KEY,
    last_run_time timestamptz NOT NULL
);
