//! sqlx queries on the `segmentation` schema.

pub mod catalog;
pub mod compile;
pub mod facts;
pub mod lifecycle;
pub mod rfm;
