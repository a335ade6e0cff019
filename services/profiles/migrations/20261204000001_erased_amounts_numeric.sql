-- The anonymous totals an erasure keeps add up amounts of every erased customer for one day,
-- kind, channel and currency. Each amount is at most 10^15 minor units, but thousands of them
-- would pass bigint, and the erasure that adds them would then fail. numeric holds any total.
ALTER TABLE erased_activity_aggregates ALTER COLUMN amount_minor TYPE numeric;
