//! sqlx queries on the `segmentation` schema.

pub mod catalog;
pub mod compile;
pub mod facts;
