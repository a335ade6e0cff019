-- An upgrade caused by qualifying activity names the ledger entry that crossed the threshold
-- (the contract's `TierChange.ledger_entry_id`); changes made by reviews, enrolment or merges
-- name none.

ALTER TABLE tier_changes ADD COLUMN ledger_entry_id uuid REFERENCES ledger_entries;

-- Upgrades recorded before this migration: the entry was appended by the same call, for the
-- same member, at the same service-clock time as the change. An upgrade with no such entry
-- was made by a review (earlier code recorded those as qualifying activity too).
UPDATE tier_changes t
SET ledger_entry_id = (
    SELECT e.ledger_entry_id FROM ledger_entries e
    WHERE e.member_id = t.member_id AND e.create_time = t.change_time AND e.kind IN (1, 3)
    ORDER BY e.ledger_entry_id DESC LIMIT 1)
WHERE t.cause = 2;
UPDATE tier_changes SET cause = 3 WHERE cause = 2 AND ledger_entry_id IS NULL;
