-- Static memberships a profiles merge took from the merged-away customer, so CustomerUnmerged
-- gives back exactly those: the source regains every static membership it held at the merge,
-- and the target loses the ones it had only through the merge. A row goes with its merge
-- record (erasure deletes those) or its segment.
CREATE TABLE merge_static_memberships (
    merge_id          text NOT NULL REFERENCES customer_merges ON DELETE CASCADE,
    segment_id        uuid NOT NULL REFERENCES segments ON DELETE CASCADE,
    -- The enter time of the membership the merge gave the target, which had none; NULL when
    -- the target was a member on its own. The unmerge ends the target's membership only while
    -- it is still that one (not ended and begun again since, e.g. by an upload).
    passed_enter_time timestamptz,
    PRIMARY KEY (merge_id, segment_id)
);
