//! The use cases: each runs one transaction over `store`, applying `domain` rules and writing
//! outbox events, idempotency keys and queued jobs with the change. Handlers in `api` parse a
//! request, call one function here and return the result; the feed consumers (`feeds`) and
//! the background jobs (`jobs`) call the engines below inside their own transactions.
//!
//! - Per area of the API: `segments`, `lookups`, `catalog`, `facts`, `export`, `rfm`,
//!   `lifecycle`, `jobs` (recompute requests), `settings`.
//! - `membership`: keeps memberships current as facts change (feed batches, erasures, merges).
//! - `derived`: RFM values and lifecycle stages, for a batch's customers or in full runs.
//! - `recompute`: a rule segment applied set-based, and the segments referencing a changed one
//!   following it.

pub mod catalog;
pub mod derived;
pub mod export;
pub mod facts;
pub mod jobs;
pub mod lifecycle;
pub mod lookups;
pub mod membership;
pub mod recompute;
pub mod rfm;
pub mod segments;
pub mod settings;
