//! Plain Rust types and rules of segmentation (no tonic, sqlx or I/O): the facts a rule reads,
//! the field catalog, rules and their in-process evaluator, RFM and lifecycle scoring.
//! - `pattern`: MATCHES_PATTERN's `LIKE` patterns, matched without backtracking.
//! - `predict`: predicted purchases, churn (P(alive)) and customer value: BG/NBD and Gamma-Gamma.

pub mod catalog;
pub mod computed;
pub mod eval;
pub mod facts;
pub mod lifecycle;
pub mod pattern;
pub mod predict;
pub mod prediction_config;
pub mod references;
pub mod rfm;
pub mod rule;
