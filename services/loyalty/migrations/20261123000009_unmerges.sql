-- Undoing customer merges (profiles CustomerUnmerged): what each merge did per program, the
-- lots it moved, and each unmerge applied (so one delivered twice is applied once).

-- One row per membership a merge touched: merged into `target_member_id`, or only re-linked
-- to the surviving customer (`target_member_id` NULL).
CREATE TABLE member_merges (
    merge_id          text NOT NULL REFERENCES customer_merges,
    source_member_id  uuid NOT NULL REFERENCES members,
    target_member_id  uuid REFERENCES members,
    PRIMARY KEY (merge_id, source_member_id)
);

-- The lots a merge moved from the source member to the target member.
CREATE TABLE member_merge_lots (
    merge_id          text NOT NULL REFERENCES customer_merges,
    point_lot_id      uuid NOT NULL REFERENCES point_lots,
    PRIMARY KEY (merge_id, point_lot_id)
);

CREATE TABLE customer_unmerges (
    merge_id      text PRIMARY KEY,
    apply_time    timestamptz NOT NULL
);

-- Merges applied before this migration: the MERGE_OUT entries name both members, and the
-- lots the source earned that now sit on the target are the ones the merge moved. (Merges
-- that only re-linked a membership left no trace and cannot be undone.)
INSERT INTO member_merges (merge_id, source_member_id, target_member_id)
SELECT e.details -> 'Merge' ->> 'merge_id', e.member_id,
       (e.details -> 'Merge' ->> 'other_member_id')::uuid
FROM ledger_entries e
WHERE e.kind = 8 AND e.details -> 'Merge' ->> 'merge_id' IN (SELECT merge_id FROM customer_merges)
ON CONFLICT DO NOTHING;

INSERT INTO member_merge_lots (merge_id, point_lot_id)
SELECT mm.merge_id, l.point_lot_id
FROM member_merges mm
JOIN point_lots l ON l.member_id = mm.target_member_id
JOIN ledger_entries origin ON origin.ledger_entry_id = l.ledger_entry_id
WHERE origin.member_id = mm.source_member_id
ON CONFLICT DO NOTHING;
