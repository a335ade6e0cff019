-- The order the sequencer gives the events of one batch. `occurred_at` is the transaction's
-- start time, which is not the order in which changes happened: a transaction that began
-- first, then waited on a row lock held by another, writes its event after the other's
-- commit, yet has the earlier start time. Both may land in one sequencer batch, and ordering
-- them by start time would deliver one aggregate's events in the wrong order. `appended_at`
-- is the clock when the row was inserted: a transaction that waited on the aggregate's row
-- appends after the one it waited for has committed, so it comes second.
ALTER TABLE outbox ADD COLUMN appended_at timestamptz NOT NULL DEFAULT clock_timestamp();

-- The sequencer's work queue, in the order it takes it.
DROP INDEX outbox_unsequenced;
CREATE INDEX outbox_unsequenced ON outbox (appended_at, id) WHERE sequence IS NULL;
