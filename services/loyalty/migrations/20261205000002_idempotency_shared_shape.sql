-- The idempotency table takes the shape every service shares (custops_common::idempotency):
-- the request is kept as its SHA-256 fingerprint, which is what the shared module computes
-- from the same protobuf encoding loyalty stored until now, so a replay across this
-- migration still matches its first call.
ALTER TABLE idempotency_keys RENAME COLUMN request TO fingerprint;
UPDATE idempotency_keys SET fingerprint = sha256(fingerprint);
ALTER TABLE idempotency_keys ALTER COLUMN response DROP DEFAULT;
