//! The time source of every rule that depends on "now" (SLA due times and breaches, submit
//! times): the suite's injectable clock, so tests can move time instead of sleeping.

pub use custops_common::clock::{Clock, ManualClock, SystemClock};
