//! The outbox, its sequencer, the `EventFeedService` and the feed consumer, against a real
//! Postgres (a database per test) and a real gRPC server on a free port; and events written
//! set-based with payloads encoded in SQL; request-id idempotency, which records its keys in
//! the statement that appends the events; retention, resyncs and consumer lag.

mod consumer;
mod feed;
mod idempotency;
mod retention;
mod sequencing;
mod set_based;
mod support;
