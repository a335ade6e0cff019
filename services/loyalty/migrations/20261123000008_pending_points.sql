-- Pending points: points earned from a purchase in a program with a return window sit in a
-- PENDING lot (counted in `balances.pending_points`, not spendable) until `release_time`,
-- when a RELEASE entry moves them to the available balance.

ALTER TABLE point_lots
    ADD COLUMN release_time timestamptz,
    ADD COLUMN pending      boolean NOT NULL DEFAULT false;
ALTER TABLE point_lots ADD CONSTRAINT point_lots_pending_has_release
    CHECK (NOT pending OR release_time IS NOT NULL);

-- EARN entries that created a pending lot: when it is released.
ALTER TABLE ledger_entries ADD COLUMN release_time timestamptz;

CREATE INDEX point_lots_release_due ON point_lots (release_time) WHERE pending;
