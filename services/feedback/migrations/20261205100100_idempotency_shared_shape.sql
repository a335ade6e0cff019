-- The idempotency table takes the shape every service shares (custops_common::idempotency):
-- keyed by (caller, request_id) instead of (caller, operation, request_id), so a request id
-- reused on another RPC is REQUEST_ID_REUSED instead of a second change; `operation` becomes
-- `method`; the first call's encoded reply (`response`) replaces the id of the resource it
-- made, which replays read back as it was now; `create_time` is indexed for pruning.
--
-- Existing rows are kept, not deleted, so that a retry straddling the upgrade is refused
-- rather than applied twice: a deleted row would let the retry create a second survey,
-- invitation, ticket or review, or apply a transition again. They cannot be replayed either,
-- since they hold no reply to answer, so their fingerprint is emptied: the old fingerprints
-- were the SHA-256 of the same request encoding the shared module hashes (a retry would
-- match and be answered an empty reply), and no SHA-256 is empty, so the same key now meets
-- REQUEST_ID_REUSED (ALREADY_EXISTS). Where one (caller, request_id) was used on several
-- RPCs, one row (the earliest) is enough to refuse them all. The rows age out with the
-- others after custops_common::idempotency::RETENTION.
DELETE FROM idempotency_keys later USING idempotency_keys earlier
 WHERE later.caller = earlier.caller
   AND later.request_id = earlier.request_id
   AND (later.create_time, later.operation) > (earlier.create_time, earlier.operation);

ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys RENAME COLUMN operation TO method;
ALTER TABLE idempotency_keys DROP COLUMN resource_id;
ALTER TABLE idempotency_keys ADD COLUMN response bytea NOT NULL DEFAULT '\x';
ALTER TABLE idempotency_keys ALTER COLUMN response DROP DEFAULT;
UPDATE idempotency_keys SET fingerprint = '\x';
ALTER TABLE idempotency_keys ADD PRIMARY KEY (caller, request_id);
CREATE INDEX idempotency_keys_age ON idempotency_keys (create_time);
