//! sqlx queries on the `segmentation` schema.

pub mod catalog;
pub mod compile;
pub mod facts;
pub mod jobs;
pub mod lifecycle;
pub mod memberships;
pub mod preview;
pub mod rfm;
pub mod segments;
pub mod settings;
pub mod uploads;
