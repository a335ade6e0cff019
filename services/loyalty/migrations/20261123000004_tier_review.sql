-- Tier reviews: when each member is next reviewed, and a downgrade a review decided that waits
-- for its grace period to end.

ALTER TABLE members
    ADD COLUMN next_review_time       timestamptz,
    ADD COLUMN pending_tier_code      text,
    ADD COLUMN pending_decide_time    timestamptz,
    ADD COLUMN pending_downgrade_time timestamptz;

CREATE INDEX members_review_due ON members (next_review_time) WHERE next_review_time IS NOT NULL;
CREATE INDEX members_downgrade_due ON members (pending_downgrade_time) WHERE pending_downgrade_time IS NOT NULL;
CREATE INDEX point_lots_expiry_due ON point_lots (expire_time) WHERE remaining_points > 0 AND expire_time IS NOT NULL;
