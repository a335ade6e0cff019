-- Reversing a redemption whose spent lot now belongs to another member (the redemption was
-- made before a merge, or an unmerge has moved the lot away since) gives the points back in a
-- lot of the member that holds the balance: `restored_lot_id` names that lot, NULL when the
-- points went back into the spent lot itself.

ALTER TABLE lot_returns ADD COLUMN restored_lot_id uuid REFERENCES point_lots;
