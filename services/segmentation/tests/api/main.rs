//! The segmentation service over real gRPC and the library's own entry points, against a real
//! Postgres (a database per test) and, where a test says so, a Redis or the profiles service.

mod helpers;

mod computed_traits;
mod custom_events;
mod end_to_end;
mod evaluators;
mod event_rules;
mod facts;
mod fixture;
mod idempotency;
mod lookups;
mod net_spend;
mod paging;
mod predictions;
mod recompute;
mod rfm_lifecycle;
mod rules;
mod segments;
mod sequence_rules;
