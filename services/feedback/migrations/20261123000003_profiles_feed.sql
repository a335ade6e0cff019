-- Following the profiles feed: erasure stamps, and the invitation uniqueness limited to known
-- customers (erased invitations keep their row with an empty customer id).
ALTER TABLE responses ADD COLUMN erase_time timestamptz;
ALTER TABLE tickets ADD COLUMN erase_time timestamptz;
ALTER TABLE reviews ADD COLUMN erase_time timestamptz;

DO $$
DECLARE
    name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
    WHERE conrelid = 'invitations'::regclass AND contype = 'u';
    EXECUTE format('ALTER TABLE invitations DROP CONSTRAINT %I', name);
END $$;
CREATE UNIQUE INDEX invitations_one_per_touchpoint
    ON invitations (survey_id, customer_id, touchpoint_kind, touchpoint_id)
    WHERE customer_id <> '';
CREATE INDEX responses_by_customer ON responses (customer_id) WHERE customer_id <> '';
CREATE INDEX tickets_by_customer ON tickets (customer_id) WHERE customer_id <> '';
CREATE INDEX reviews_by_customer ON reviews (customer_id) WHERE customer_id <> '';
