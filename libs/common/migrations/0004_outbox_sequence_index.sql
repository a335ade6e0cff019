-- A feed position is unique once a row has one. The unique index holds the sequenced rows
-- only: a row is appended without a sequence, so under the constraint of 0001 every append
-- wrote a NULL entry into this index for nothing (a recompute appends hundreds of thousands
-- of rows in one statement; every mutation of every service appends at least one). Readers
-- ask for `sequence > n`, `max(sequence)` and `min(sequence)`, which the partial index
-- serves as the constraint's did.
ALTER TABLE outbox DROP CONSTRAINT outbox_sequence_key;
CREATE UNIQUE INDEX outbox_sequence ON outbox (sequence) WHERE sequence IS NOT NULL;
