-- Customer merges followed from the profiles feed: which member a merged-away one went into,
-- and each merge applied (so a merge event delivered twice is applied once).

ALTER TABLE members ADD COLUMN merged_into_member_id uuid REFERENCES members;

CREATE TABLE customer_merges (
    merge_id            text PRIMARY KEY,
    source_customer_id  uuid        NOT NULL,
    target_customer_id  uuid        NOT NULL,
    apply_time          timestamptz NOT NULL
);
