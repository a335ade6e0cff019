-- What UnmergeCustomer needs: both customers before the merge and the target right after it
-- (protobuf-encoded `Customer` messages, the contract's own stable form), purged when the
-- window closes or the customer is erased; and who undid the merge, when and why.
ALTER TABLE merges
    ADD COLUMN source_before bytea,
    ADD COLUMN target_before bytea,
    ADD COLUMN target_after bytea,
    ADD COLUMN unmerge_time timestamptz,
    ADD COLUMN unmerge_actor_kind smallint,
    ADD COLUMN unmerge_actor_id text,
    ADD COLUMN unmerge_actor_service text,
    ADD COLUMN unmerge_reason text NOT NULL DEFAULT '';
CREATE INDEX merges_time ON merges (merge_time DESC, merge_id DESC);
