//! Sequence conditions in SQL (rule.proto `SequenceCondition`), with exactly the semantics of
//! `domain::eval::sequences`: an EXISTS over pairs `customer_events a JOIN customer_events b`
//! of the customer (each read through the (customer_id, event_type, occur_time) index), B
//! strictly after A in event order (occur time, then activity id `COLLATE "C"`, byte order as
//! Rust compares), at most N × 24 h later, and a NOT EXISTS of a C strictly between them. Like
//! event conditions it is correlated on the customer in both shapes of the compiler.

use crate::domain::rule::{EventStep, SequenceCondition};

use super::{Compiler, SqlValue};

/// `later` strictly after `earlier` in event order.
fn after(later: &str, earlier: &str) -> String {
    format!(
        "({later}.occur_time > {earlier}.occur_time OR ({later}.occur_time = {earlier}.occur_time \
         AND {later}.activity_id COLLATE \"C\" > {earlier}.activity_id COLLATE \"C\"))"
    )
}

impl Compiler {
    /// A two-valued test of `condition` for the customer of `f`.
    pub(super) fn sequence(&mut self, condition: &SequenceCondition) -> String {
        let first = self.step_test("a", &condition.first);
        let window = self.window_test("a", condition.window);
        let then = self.step_test("b", &condition.then);
        let hours = self.bind(SqlValue::Int(condition.within_days * 24), "integer");
        let not_between = match &condition.not_between {
            None => String::new(),
            Some(step) => {
                let c = self.step_test("c", step);
                format!(
                    " AND NOT EXISTS (SELECT 1 FROM customer_events c \
                     WHERE c.customer_id = f.customer_id AND {c} AND {} AND {})",
                    after("c", "a"),
                    after("b", "c"),
                )
            }
        };
        format!(
            "EXISTS (SELECT 1 FROM customer_events a JOIN customer_events b \
             ON b.customer_id = a.customer_id \
             WHERE a.customer_id = f.customer_id AND {first}{window} AND {then} AND {} \
             AND b.occur_time <= a.occur_time + make_interval(hours => {hours}){not_between})",
            after("b", "a"),
        )
    }

    /// The condition on the event aliased `alias` selecting the events of `step`.
    fn step_test(&mut self, alias: &str, step: &EventStep) -> String {
        let event_type = self.bind(SqlValue::Text(step.event_type.clone()), "text");
        let mut sql = format!("{alias}.event_type = {event_type}");
        for filter in &step.filters {
            let test = self.property_test(alias, filter);
            sql.push_str(&format!(" AND {test}"));
        }
        sql
    }
}
