-- Erasure (right to be forgotten) from the profiles feed: the member is closed and unlinked
-- from the customer (customer_id NULL, anonymized), its ledger kept for accounting; erased
-- customers cannot enrol again.

ALTER TABLE members ALTER COLUMN customer_id DROP NOT NULL;
ALTER TABLE members ADD COLUMN anonymized boolean NOT NULL DEFAULT false;

CREATE TABLE erased_customers (
    customer_id uuid PRIMARY KEY,
    erase_time  timestamptz NOT NULL
);
