-- Net spend (issue 21): refunds reduce the purchase of their order.
--
-- A refund is kept in `customer_refunds` (never in `customer_activities`, so no query over
-- activities can count it as a purchase or an interaction), matched to a purchase of the same
-- customer by `order_id` and currency. What the refunds of an order add up to is maintained
-- on the purchase row (`refunded_minor`) by `store::facts::apply_refunds`, so both rule
-- evaluators, RFM, lifecycle and predictions read net amounts from the activity row alone:
-- net = GREATEST(amount_minor - refunded_minor, 0); a purchase with refunded_minor > 0 and
-- refunded_minor >= amount_minor is refunded in full and no longer counts as a purchase.

-- The order a purchase belongs to (`Purchase.order_id`); NULL for interactions and for
-- purchases stored before this migration (refunds cannot find those).
ALTER TABLE customer_activities ADD COLUMN order_id text;
-- Purchases only: the sum of the refunds of the same customer, order and currency, all on the
-- earliest purchase of that order (by occur time, then activity id); 0 for every other row.
ALTER TABLE customer_activities ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0;
CREATE INDEX customer_activities_order ON customer_activities (customer_id, order_id)
    WHERE order_id IS NOT NULL;

-- Refunds from the profiles feed, keyed by activity id (a redelivery stores nothing new). Kept
-- whether or not their purchase is known: a purchase arriving later picks them up.
CREATE TABLE customer_refunds (
    activity_id   text PRIMARY KEY,
    customer_id   text NOT NULL,
    order_id      text NOT NULL,
    occur_time    timestamptz NOT NULL,
    amount_minor  bigint NOT NULL,
    currency      text NOT NULL,
    -- As on `customer_activities`: the customer before a merge moved it, and that merge.
    merged_from   text,
    merge_id      text
);
CREATE INDEX customer_refunds_order ON customer_refunds (customer_id, order_id);
CREATE INDEX customer_refunds_merge ON customer_refunds (merge_id) WHERE merge_id IS NOT NULL;
