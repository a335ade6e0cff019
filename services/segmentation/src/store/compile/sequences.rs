//! Sequence conditions in SQL (rule.proto `SequenceCondition`), with exactly the semantics of
//! `domain::eval::sequences` and its algorithm: the customer's events of the steps' types in
//! event order (occur time, then activity id `COLLATE "C"`, byte order as Rust compares),
//! numbered; for each B, window functions over the rows strictly before it give the latest A
//! (its number and time) and the latest C; B holds when that A exists, is at most N × 24 h
//! earlier, and no C comes after it. The latest A is the only one worth testing: it is the
//! closest in time and has the fewest C after it. One sort of the customer's events of those
//! types, not a join of pairs (which was quadratic in a customer's events). Like event
//! conditions it is correlated on the customer in both shapes of the compiler.

use crate::domain::rule::{EventStep, SequenceCondition};

use super::{Compiler, SqlValue};

impl Compiler {
    /// A two-valued test of `condition` for the customer of `f`.
    pub(super) fn sequence(&mut self, condition: &SequenceCondition) -> String {
        let first = self.step_test("e", &condition.first);
        let window = self.window_test("e", condition.window);
        let then = self.step_test("e", &condition.then);
        let not_between = match &condition.not_between {
            None => "false".to_owned(),
            Some(step) => self.step_test("e", step),
        };
        let mut types: Vec<String> = condition
            .steps()
            .map(|step| step.event_type.clone())
            .collect();
        types.sort();
        types.dedup();
        let types = self.bind(SqlValue::TextArray(types), "text[]");
        let hours = self.bind(SqlValue::Int(condition.within_days * 24), "integer");
        format!(
            "EXISTS (SELECT 1 FROM (SELECT x.is_b, x.occur_time, \
               max(x.n) FILTER (WHERE x.is_a) OVER before AS last_a, \
               max(x.occur_time) FILTER (WHERE x.is_a) OVER before AS last_a_time, \
               max(x.n) FILTER (WHERE x.is_c) OVER before AS last_c \
             FROM (SELECT e.occur_time, \
                 row_number() OVER (ORDER BY e.occur_time, e.activity_id COLLATE \"C\") AS n, \
                 COALESCE(({first}{window}), false) AS is_a, \
                 COALESCE(({then}), false) AS is_b, \
                 COALESCE(({not_between}), false) AS is_c \
               FROM customer_events e \
               WHERE e.customer_id = f.customer_id AND e.event_type = ANY({types})) x \
             WINDOW before AS (ORDER BY x.n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) y \
             WHERE y.is_b AND y.last_a IS NOT NULL \
               AND y.occur_time <= y.last_a_time + make_interval(hours => {hours}) \
               AND (y.last_c IS NULL OR y.last_c <= y.last_a))"
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
