-- What the facts projection needs beyond the first schema: open tickets per customer (so
-- open_ticket_count is idempotent under redelivery), merge bookkeeping for loyalty rows and
-- tickets, the merges themselves (to undo them exactly), tombstones of deleted, merged-away
-- and erased customers, and the lifecycle values reported with a stage.

-- Tickets of the feedback feed; a ticket is open in statuses OPEN and IN_PROGRESS.
CREATE TABLE customer_tickets (
    ticket_id   text PRIMARY KEY,
    customer_id text NOT NULL,
    open        boolean NOT NULL,
    merged_from text,
    merge_id    text
);
CREATE INDEX customer_tickets_customer ON customer_tickets (customer_id) WHERE open;

-- Loyalty rows moved by a profiles merge, and the loyalty feed sequence of the snapshot held
-- (an older snapshot never overwrites a newer one).
ALTER TABLE loyalty_memberships
    ADD COLUMN merged_from text,
    ADD COLUMN merge_id text,
    ADD COLUMN feed_sequence bigint NOT NULL DEFAULT 0;

-- One row per applied profiles merge: the source's facts row as it was, and the target's
-- feedback facts before the merge, so CustomerUnmerged restores both.
CREATE TABLE customer_merges (
    merge_id        text PRIMARY KEY,
    source_id       text NOT NULL,
    target_id       text NOT NULL,
    source_facts    jsonb,
    target_feedback jsonb NOT NULL DEFAULT '{}',
    unmerged        boolean NOT NULL DEFAULT false
);

-- Customers without a facts row on purpose: "deleted" (facts kept here for CustomerUndeleted),
-- "merged" (merged away), "erased" (nothing kept). Loyalty and feedback events do not
-- recreate their facts rows.
CREATE TABLE customer_tombstones (
    customer_id text PRIMARY KEY,
    reason      text NOT NULL CHECK (reason IN ('deleted', 'merged', 'erased')),
    facts       jsonb
);

-- Lifecycle values CustomerLifecycle reports as of lifecycle_evaluate_time.
ALTER TABLE customer_facts
    ADD COLUMN lifecycle_days_since_last_purchase integer,
    ADD COLUMN lifecycle_expected_gap_days double precision;
