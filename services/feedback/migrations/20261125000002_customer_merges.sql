-- Undoing customer merges (profiles CustomerUnmerged) exactly: each merge feedback applied,
-- every row it moved, and each unmerge applied, so that a redelivered event applies once and an
-- unmerge moves back exactly what its merge moved (loyalty's member_merges / member_merge_lots
-- pattern).

-- One row per applied CustomerMerged (a merge id seen again changes nothing). Kept after an
-- unmerge, so a late redelivery of the merge cannot apply it again; deleted when either
-- customer is erased.
CREATE TABLE customer_merges (
    merge_id           text        PRIMARY KEY,
    source_customer_id text        NOT NULL,
    target_customer_id text        NOT NULL,
    apply_time         timestamptz NOT NULL
);
CREATE INDEX customer_merges_by_source ON customer_merges (source_customer_id);
CREATE INDEX customer_merges_by_target ON customer_merges (target_customer_id);

-- The rows a merge moved from its source to its target: the merge id tagging each row. A link
-- table rather than a column on each row, because a row can be moved by several merges in turn
-- (S into T, then T into U), and undoing them in reverse order must find it under each.
CREATE TABLE merge_moves (
    merge_id  text NOT NULL REFERENCES customer_merges ON DELETE CASCADE,
    item_kind text NOT NULL CHECK (item_kind IN ('invitation', 'response', 'ticket', 'review')),
    item_id   uuid NOT NULL,
    PRIMARY KEY (merge_id, item_kind, item_id)
);

-- One row per applied CustomerUnmerged, whether or not feedback knew the merge.
CREATE TABLE customer_unmerges (
    merge_id   text        PRIMARY KEY,
    apply_time timestamptz NOT NULL
);

-- Rows that merges applied before this migration moved: those merges recorded neither their
-- id nor what they moved, only re-keyed rows to the target. Where feedback's own outbox still
-- tells the customer a row was created for (see the next migration), the row is listed here
-- with that customer, so an unmerge of that pair moves it back and an erasure of that
-- customer anonymises it.
CREATE TABLE legacy_merge_moves (
    item_kind          text NOT NULL CHECK (item_kind IN ('invitation', 'response', 'ticket', 'review')),
    item_id            uuid NOT NULL,
    source_customer_id text NOT NULL,
    PRIMARY KEY (item_kind, item_id)
);
CREATE INDEX legacy_merge_moves_by_source ON legacy_merge_moves (source_customer_id);
