-- Shared by every service and applied in its own schema (the connection's search_path) before
-- the service's own migrations. Versions 1–999 belong to libs/common; service migrations use
-- timestamp versions, so the two sets never collide.

-- The transactional outbox. A service inserts its domain events here in the same transaction
-- as the change. Column names follow Debezium's outbox event router (id, aggregatetype,
-- aggregateid, type, payload) so CDC into Kafka can replace the gRPC feed without changing a
-- producer.
--
-- `sequence` is the feed position. It is NULL when the row is written and assigned after
-- commit by the feed's sequencer (one at a time, under an advisory lock), in the order rows
-- become visible. A transaction that commits late therefore gets a later sequence than every
-- event already delivered, so consumers that resume "after sequence N" never skip it.
CREATE TABLE outbox (
    id            uuid PRIMARY KEY,
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       bytea       NOT NULL,
    traceparent   text        NOT NULL DEFAULT '',
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    sequence      bigint      UNIQUE
);

-- The sequencer's work queue: committed rows still waiting for a feed position.
CREATE INDEX outbox_unsequenced ON outbox (id) WHERE sequence IS NULL;

-- Where this service's consumers are in other services' feeds. A consumer advances its row in
-- the same transaction as the effect of the events it applied, so each effect happens once.
CREATE TABLE feed_cursors (
    feed          text        PRIMARY KEY,
    last_sequence bigint      NOT NULL DEFAULT 0 CHECK (last_sequence >= 0),
    update_time   timestamptz NOT NULL DEFAULT now()
);
