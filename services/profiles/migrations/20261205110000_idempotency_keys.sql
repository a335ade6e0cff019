-- Request ids move to the shape every service shares (custops_common::idempotency): the
-- first response's bytes are kept, so a replay answers them instead of re-reading the
-- customer, and `create_time` (indexed) lets the keys be pruned after the shared retention.
CREATE TABLE idempotency_keys (
    caller      text        NOT NULL,
    request_id  text        NOT NULL,
    method      text        NOT NULL,
    fingerprint bytea       NOT NULL,
    response    bytea       NOT NULL,
    create_time timestamptz NOT NULL,
    PRIMARY KEY (caller, request_id)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (create_time);

-- The keys of `request_ids` are kept, not dropped, so that a retry straddling the upgrade is
-- refused (REQUEST_ID_REUSED) rather than applied twice: a dropped key would let a retried
-- CreateCustomer create a second customer. They kept no response to replay, so their
-- fingerprint is made one no request can have (the old hex hash as text behind a prefix,
-- never a 32-byte SHA-256): the same key comes back as REQUEST_ID_REUSED whatever the request.
-- Both tables are keyed by (caller, request_id), so each old key is one row here. They age
-- out with the others after the retention.
INSERT INTO idempotency_keys (caller, request_id, method, fingerprint, response, create_time)
SELECT caller, request_id, method, convert_to('request_ids:' || payload_hash, 'UTF8'), '',
       create_time
FROM request_ids;

DROP TABLE request_ids;
