//! The use cases: each runs one transaction over `store`, applying `domain` rules and writing
//! outbox events, idempotency keys and queued jobs with the change. Handlers in `api` parse a
//! request, call one function here and return the result.

pub mod catalog;
pub mod export;
pub mod facts;
pub mod jobs;
pub mod lifecycle;
pub mod lookups;
pub mod rfm;
pub mod segments;
pub mod settings;
