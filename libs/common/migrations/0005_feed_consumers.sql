-- The consumers registered with this service's feed, and how far each has acknowledged it.
-- A consumer names itself when it subscribes (`SubscribeRequest.consumer`, the consuming
-- service, e.g. "segmentation", shared by its replicas) and acknowledges what it has durably
-- applied (`AcknowledgeEvents`, and the position it subscribes after). Retention prunes an
-- outbox row only once every registered consumer has acknowledged it and the retention period
-- has passed (`retention.rs`), and `ListFeedConsumers` reads each one's lag from here.
--
-- `acked_sequence` only moves forward (GREATEST): replicas of one consumer acknowledge in any
-- order, and a replica restored from an old cursor must not make retention keep what it has
-- already let go. An operator retires a consumer that will never come back by deleting its row.
CREATE TABLE feed_consumers (
    consumer       text        PRIMARY KEY,
    acked_sequence bigint      NOT NULL DEFAULT 0 CHECK (acked_sequence >= 0),
    acked_at       timestamptz NOT NULL,
    registered_at  timestamptz NOT NULL
);

-- Retention deletes the oldest rows, by sequence: the partial unique index `outbox_sequence`
-- (0004) serves both `sequence <= n` and min(sequence), so no further index is needed.
