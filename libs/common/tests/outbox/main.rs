//! The outbox, its sequencer, the `EventFeedService` and the feed consumer, against a real
//! Postgres (a database per test) and a real gRPC server on a free port; and events written
//! set-based with payloads encoded in SQL.

mod consumer;
mod feed;
mod sequencing;
mod set_based;
mod support;
