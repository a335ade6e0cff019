//! Compiles a rule to one parameterised SQL condition over `customer_facts f`, with exactly
//! the semantics of the in-process evaluator (`domain::eval`; tests/evaluators.rs holds the
//! two equal on random rules and facts).
//!
//! Two shapes of the activity aggregates (counts, sums, first and last times): [`compile`]
//! reads each with a subquery correlated on the customer, right for a few customers (the feed,
//! dependants that moved), and [`compile_grouped`] reads them from one pass over the
//! activities grouped by customer and joined to the facts ([`CompiledRule::from_clause`]),
//! right for everyone (a recompute, a preview): Postgres runs the correlated form once per
//! customer, index probe and all, which at a million customers took three times the hand-written
//! `GROUP BY`. Custom event aggregates have the same two shapes (`compile/events.rs`, the
//! grouped pass `ge` over `customer_events`).
//!
//! The SQL text holds only fixed fragments chosen by the field's catalog key and operator,
//! and placeholders: every value of the rule (strings, numbers, dates, segment ids, attribute
//! names, filter entries, window lengths) is bound, never spliced. Two-valued truth: every
//! predicate is `COALESCE(…, false)` (or an EXISTS), so a NULL from an unset field can never
//! leak into a NOT and flip it.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use crate::domain::catalog::{FieldKey, Operator, ValueType};
use crate::domain::computed;
use crate::domain::eval;
use crate::domain::facts::EvalContext;
use crate::domain::rule::{Aggregate, EventMeasure, Filter, Node, Predicate, Rule, Value, Window};
use crate::store::facts::{COUNTS_AS_PURCHASE, NET_AMOUNT};

mod events;
mod sequences;

/// A value bound to a placeholder of a compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    TextArray(Vec<String>),
    BigInt(i64),
    BigIntArray(Vec<i64>),
    Int(i32),
    Double(f64),
    DoubleArray(Vec<f64>),
    Bool(bool),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
    Uuid(Uuid),
}

/// One boolean SQL expression over the alias `f` (`customer_facts f`) and, when compiled
/// grouped, the alias `g` of the activity aggregates ([`CompiledRule::from_clause`]): `$1` is
/// the evaluation time T (timestamptz), `$2` today (date), `$3…` are `binds` in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    pub sql: String,
    pub binds: Vec<SqlValue>,
    /// The grouped activity aggregates `g` reads, as (`aggregate FILTER (…) AS gN`, the filter);
    /// empty when compiled correlated or when the rule reads none.
    aggregates: Vec<(String, String)>,
    /// The grouped custom event aggregates `ge` reads, likewise (`… AS eN`, the filter).
    event_aggregates: Vec<(String, String)>,
    /// Whether the rule is false for every customer without a row in `ge` (a conjunct of the
    /// root is an event condition of `ge` that fails over no event, e.g. COUNT ≥ 1), so `ge`
    /// is inner-joined: only customers with covered events are evaluated, as the hand-written
    /// `JOIN customer_events … GROUP BY` of such a rule reads them.
    events_required: bool,
}

/// Compiles `rule` with correlated activity aggregates (see the module docs).
pub fn compile(rule: &Rule) -> CompiledRule {
    compile_as(rule, false)
}

/// Compiles `rule` with grouped activity aggregates (see the module docs).
pub fn compile_grouped(rule: &Rule) -> CompiledRule {
    compile_as(rule, true)
}

/// Compiles the value of `measure` for the customer of `f` (a scalar subquery over
/// `customer_events`, NULL when unset): what an event condition on it compares, and what a
/// computed trait stores (`store::computed`).
pub fn compile_measure(measure: &EventMeasure) -> CompiledRule {
    let mut compiler = Compiler {
        binds: Vec::new(),
        grouped: false,
        aggregates: Vec::new(),
        event_aggregates: Vec::new(),
    };
    // Computed traits take no money measure (their value would have no single currency).
    let sql = compiler.measure(measure, None);
    CompiledRule {
        sql,
        binds: compiler.binds,
        aggregates: compiler.aggregates,
        event_aggregates: compiler.event_aggregates,
        events_required: false,
    }
}

fn compile_as(rule: &Rule, grouped: bool) -> CompiledRule {
    let mut compiler = Compiler {
        binds: Vec::new(),
        grouped,
        aggregates: Vec::new(),
        event_aggregates: Vec::new(),
    };
    let sql = compiler.node(rule.root());
    CompiledRule {
        sql,
        binds: compiler.binds,
        events_required: !compiler.event_aggregates.is_empty() && requires_events(rule.root()),
        aggregates: compiler.aggregates,
        event_aggregates: compiler.event_aggregates,
    }
}

/// Whether `node` is false for a customer without covered events of any grouped event
/// aggregate: it is such an event condition failing over no event, or an `all` holding one.
fn requires_events(node: &Node) -> bool {
    match node {
        Node::Event(condition) => {
            condition.measure.aggregate != Aggregate::MostFrequent
                && !eval::event_holds_without_events(condition)
        }
        Node::All(children) => children.iter().any(requires_events),
        _ => false,
    }
}

impl CompiledRule {
    /// The FROM clause the condition reads: `customer_facts f`, left-joined to the rule's
    /// grouped activity aggregates `g` (one pass over the activities any of them covers) and
    /// custom event aggregates `ge` (likewise over `customer_events`) when it has any.
    pub fn from_clause(&self) -> String {
        let mut from = "customer_facts f".to_owned();
        let events_join = if self.events_required {
            "JOIN"
        } else {
            "LEFT JOIN"
        };
        for (join, table, alias, rows, aggregates) in [
            (
                "LEFT JOIN",
                "customer_activities",
                "g",
                "a",
                &self.aggregates,
            ),
            (
                events_join,
                "customer_events",
                "ge",
                "e",
                &self.event_aggregates,
            ),
        ] {
            if aggregates.is_empty() {
                continue;
            }
            let columns: Vec<&str> = aggregates.iter().map(|(c, _)| c.as_str()).collect();
            let covered: Vec<String> = aggregates
                .iter()
                .map(|(_, filter)| format!("({filter})"))
                .collect();
            from.push_str(&format!(
                " {join} (SELECT {rows}.customer_id, {} FROM {table} {rows} \
                 WHERE {} GROUP BY {rows}.customer_id) {alias} \
                 ON {alias}.customer_id = f.customer_id",
                columns.join(", "),
                covered.join(" OR ")
            ));
        }
        from
    }

    /// Binds one more value after the rule's own and returns its placeholder with `cast`
    /// (for statements that wrap the compiled SQL, e.g. `store::computed`).
    pub fn push(&mut self, value: SqlValue, cast: &str) -> String {
        self.binds.push(value);
        format!("${}::{cast}", self.binds.len() + 2)
    }

    /// Binds `$3…` onto `query`; the caller binds `$1` (T) and `$2` (today) first.
    pub fn bind<'q>(
        &'q self,
        mut query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        for value in &self.binds {
            query = match value {
                SqlValue::Text(v) => query.bind(v),
                SqlValue::TextArray(v) => query.bind(v),
                SqlValue::BigInt(v) => query.bind(v),
                SqlValue::BigIntArray(v) => query.bind(v),
                SqlValue::Int(v) => query.bind(v),
                SqlValue::Double(v) => query.bind(v),
                SqlValue::DoubleArray(v) => query.bind(v),
                SqlValue::Bool(v) => query.bind(v),
                SqlValue::Timestamp(v) => query.bind(v),
                SqlValue::Date(v) => query.bind(v),
                SqlValue::Uuid(v) => query.bind(v),
            };
        }
        query
    }
}

/// The ids of every customer in `customer_facts` matching the `compiled` rule at `ctx`,
/// ordered (the tests hold it against the in-process evaluator, in both shapes).
pub async fn matching_customers(
    conn: &mut PgConnection,
    compiled: &CompiledRule,
    ctx: &EvalContext,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = format!(
        "SELECT f.customer_id FROM {} WHERE {} ORDER BY 1",
        compiled.from_clause(),
        compiled.sql
    );
    // The text holds only fixed fragments and placeholders; every value is bound.
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ctx.now)
        .bind(ctx.today);
    let rows = compiled.bind(query).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| sqlx::Row::try_get::<String, _>(row, 0))
        .collect()
}

struct Compiler {
    binds: Vec<SqlValue>,
    /// Activity and custom event aggregates as columns of `g` and `ge` rather than correlated
    /// subqueries.
    grouped: bool,
    aggregates: Vec<(String, String)>,
    event_aggregates: Vec<(String, String)>,
}

/// How a field's value is read in SQL.
enum Expr {
    /// A scalar expression, NULL when unset.
    Scalar(String),
    /// A `text[]` expression, never NULL; empty when unset.
    List(String),
    /// Loyalty: `expr` over the membership alias `l`, tested per matching membership.
    PerMembership { expr: &'static str },
}

impl Compiler {
    /// Binds `value` and returns its placeholder with an explicit cast.
    fn bind(&mut self, value: SqlValue, cast: &str) -> String {
        self.binds.push(value);
        // $1 and $2 are T and today.
        format!("${}::{cast}", self.binds.len() + 2)
    }

    fn node(&mut self, node: &Node) -> String {
        match node {
            Node::All(children) => self.join(children, " AND "),
            Node::Any(children) => self.join(children, " OR "),
            Node::Not(child) => format!("(NOT {})", self.node(child)),
            Node::Predicate(predicate) => self.predicate(predicate),
            Node::Segment(id) => {
                let id = self.bind(SqlValue::Uuid(*id), "uuid");
                format!(
                    "EXISTS (SELECT 1 FROM memberships m WHERE m.segment_id = {id} \
                     AND m.customer_id = f.customer_id)"
                )
            }
            Node::Event(condition) => self.event(condition),
            Node::Sequence(condition) => self.sequence(condition),
        }
    }

    fn join(&mut self, children: &[Node], separator: &str) -> String {
        let parts: Vec<String> = children.iter().map(|c| self.node(c)).collect();
        format!("({})", parts.join(separator))
    }

    fn predicate(&mut self, p: &Predicate) -> String {
        match self.expr(p) {
            Expr::Scalar(expr) => self.scalar_test(&expr, p),
            Expr::List(expr) => self.list_test(&expr, p),
            Expr::PerMembership { expr } => {
                let mut from = "SELECT 1 FROM loyalty_memberships l \
                                WHERE l.customer_id = f.customer_id"
                    .to_owned();
                if !p.filter.loyalty_program_id.is_empty() {
                    let program =
                        self.bind(SqlValue::Text(p.filter.loyalty_program_id.clone()), "text");
                    from.push_str(&format!(" AND l.loyalty_program_id = {program}"));
                }
                match p.operator {
                    Operator::IsSet => format!("EXISTS ({from} AND {expr} IS NOT NULL)"),
                    Operator::IsNotSet => format!("(NOT EXISTS ({from} AND {expr} IS NOT NULL))"),
                    _ => {
                        let test = self.scalar_test(expr, p);
                        format!("EXISTS ({from} AND {test})")
                    }
                }
            }
        }
    }

    /// The SQL reading `p`'s field.
    fn expr(&mut self, p: &Predicate) -> Expr {
        use FieldKey as K;
        let scalar = |sql: &str| Expr::Scalar(sql.to_owned());
        match &p.key {
            K::CustomerCreateTime => scalar("f.customer_create_time"),
            K::Country => scalar("NULLIF(f.country, '')"),
            K::Region => scalar("NULLIF(f.region, '')"),
            K::City => scalar("NULLIF(f.city, '')"),
            K::BirthDate => scalar("f.birth_date"),
            K::Age => scalar("rule_age(f.birth_date, $2::date)::bigint"),
            K::DaysUntilBirthday => {
                scalar("rule_days_until_birthday(f.birth_date, $2::date)::bigint")
            }
            K::Gender => scalar("NULLIF(f.gender, '')"),
            K::IncomeBand => scalar("NULLIF(f.income_band, '')"),
            K::Occupation => scalar("NULLIF(f.occupation, '')"),
            K::Education => scalar("NULLIF(f.education, '')"),
            K::Interests => Expr::List("f.interests".to_owned()),
            K::LifestyleTags => Expr::List("f.lifestyle_tags".to_owned()),
            K::Tags => Expr::List("f.tags".to_owned()),
            K::Attribute(name) => {
                let name = self.bind(SqlValue::Text(name.clone()), "text");
                let value = |key: &str| format!("(f.attributes -> {name} ->> '{key}')");
                Expr::Scalar(match p.value_type {
                    ValueType::Integer => format!("{}::bigint", value("integer")),
                    ValueType::Double => format!("{}::float8", value("double")),
                    ValueType::Bool => format!("{}::boolean", value("bool")),
                    ValueType::Timestamp => format!("{}::timestamptz", value("timestamp")),
                    ValueType::Date => format!("{}::date", value("date")),
                    // Attributes are never of the other types; read them as text.
                    _ => format!("NULLIF({}, '')", value("string")),
                })
            }
            K::ConsentSms => scalar("f.consent_sms"),
            K::ConsentEmail => scalar("f.consent_email"),
            K::ConsentAppPush => scalar("f.consent_app_push"),
            K::ConsentWechat => scalar("f.consent_wechat"),
            K::PurchaseCount | K::InteractionCount => {
                let covered = self.activities(p);
                Expr::Scalar(self.aggregate("count(*)", covered, Some("0")))
            }
            K::PurchaseAmount => {
                let currency = match p.values.first() {
                    Some(Value::Money(money)) => money.currency.clone(),
                    _ => String::new(),
                };
                let covered = self.activities(p);
                let currency = self.bind(SqlValue::Text(currency), "text");
                let covered = format!("{covered} AND a.currency = {currency}");
                // Net of refunds (`Activity::net_amount`).
                let sum = format!("sum({NET_AMOUNT})");
                Expr::Scalar(self.aggregate(&sum, covered, Some("0")))
            }
            K::PurchaseFirstTime => {
                let covered = self.activities(p);
                Expr::Scalar(self.aggregate("min(a.occur_time)", covered, None))
            }
            K::PurchaseLastTime | K::InteractionLastTime => {
                let covered = self.activities(p);
                Expr::Scalar(self.aggregate("max(a.occur_time)", covered, None))
            }
            // Lists stay correlated in both shapes: rare, and a grouped DISTINCT over unnested
            // categories would cost more than it saves.
            K::PurchaseCategories => {
                let covered = self.activities(p);
                Expr::List(format!(
                    "((SELECT COALESCE(array_agg(DISTINCT c.category), '{{}}'::text[]) \
                     FROM customer_activities a \
                     CROSS JOIN LATERAL unnest(a.categories) AS c(category) \
                     WHERE a.customer_id = f.customer_id AND {covered})::text[])"
                ))
            }
            K::PurchaseChannels => {
                let covered = self.activities(p);
                Expr::List(format!(
                    "((SELECT COALESCE(array_agg(DISTINCT a.channel), '{{}}'::text[]) \
                     FROM customer_activities a \
                     WHERE a.customer_id = f.customer_id AND {covered} \
                     AND a.channel <> '')::text[])"
                ))
            }
            K::RfmGroup => scalar("NULLIF(f.rfm_group, '')"),
            K::RfmRecencyScore => scalar("NULLIF(f.rfm_recency_score, 0)::bigint"),
            K::RfmFrequencyScore => scalar("NULLIF(f.rfm_frequency_score, 0)::bigint"),
            K::RfmMonetaryScore => scalar("NULLIF(f.rfm_monetary_score, 0)::bigint"),
            K::RfmRecencyDays => scalar("f.rfm_recency_days::bigint"),
            K::RfmFrequency => scalar("f.rfm_frequency"),
            K::RfmMonetary => scalar("f.rfm_monetary_minor"),
            K::LifecycleStage => scalar("NULLIF(f.lifecycle_stage, '')"),
            K::LifecycleStageStartTime => scalar("f.lifecycle_stage_start_time"),
            K::LifecycleChurnRisk => scalar("f.churn_risk"),
            K::LifecycleChurnRiskScore => scalar("f.churn_risk_score"),
            // Predictions live in their own table (one row per predicted customer): read by
            // primary key, unset (NULL) without a row, as the Rust evaluator reads `None`.
            K::PredictedProbabilityAlive => scalar(
                "(SELECT p.probability_alive FROM customer_predictions p \
                 WHERE p.customer_id = f.customer_id)",
            ),
            K::PredictedPurchases90d => scalar(
                "(SELECT p.expected_purchases_90d FROM customer_predictions p \
                 WHERE p.customer_id = f.customer_id)",
            ),
            K::PredictedTransactionValue => scalar(
                "(SELECT p.expected_value_minor FROM customer_predictions p \
                 WHERE p.customer_id = f.customer_id)",
            ),
            K::PredictedClv => scalar(
                "(SELECT p.clv_minor FROM customer_predictions p \
                 WHERE p.customer_id = f.customer_id)",
            ),
            K::PredictedChurnRisk => scalar(
                "(SELECT p.churn_risk FROM customer_predictions p \
                 WHERE p.customer_id = f.customer_id)",
            ),
            K::Computed { name, aggregate } => {
                let name = self.bind(SqlValue::Text(name.clone()), "text");
                let column = computed::value_column(aggregate.value_type());
                let stored = format!(
                    "(SELECT c.{column} FROM customer_computed_traits c \
                     WHERE c.customer_id = f.customer_id AND c.name = {name})"
                );
                Expr::Scalar(match aggregate {
                    // A customer without a row has no event of the type: the count or sum of
                    // nothing.
                    Aggregate::Count => format!("COALESCE({stored}, 0::bigint)"),
                    Aggregate::Sum => format!("COALESCE({stored}, 0::float8)"),
                    Aggregate::MostFrequent => format!("NULLIF({stored}, '')"),
                    _ => stored,
                })
            }
            K::LoyaltyTier => Expr::PerMembership {
                expr: "NULLIF(l.tier, '')",
            },
            K::LoyaltyPoints => Expr::PerMembership { expr: "l.points" },
            K::LoyaltyQualifyingPoints => Expr::PerMembership {
                expr: "l.qualifying_points",
            },
            K::LoyaltyEnrollTime => Expr::PerMembership {
                expr: "l.enroll_time",
            },
            K::FeedbackLastNpsScore => scalar("f.last_nps_score::bigint"),
            K::FeedbackLastNpsCategory => scalar(
                "(CASE WHEN f.last_nps_score IS NULL THEN NULL \
                 WHEN f.last_nps_score >= 9 THEN 'promoter' \
                 WHEN f.last_nps_score >= 7 THEN 'passive' ELSE 'detractor' END)",
            ),
            K::FeedbackLastNpsTime => scalar("f.last_nps_time"),
            K::FeedbackLastCsatScore => scalar("f.last_csat_score::bigint"),
            K::FeedbackOpenTicketCount => scalar("f.open_ticket_count::bigint"),
        }
    }

    /// `aggregate` over the activities of `f`'s customer that `covered` (a condition on `a`)
    /// selects, `otherwise` when there are none (NULL if not given): a correlated subquery,
    /// or a column of the grouped `g`.
    fn aggregate(&mut self, aggregate: &str, covered: String, otherwise: Option<&str>) -> String {
        if self.grouped {
            let column = format!("g{}", self.aggregates.len() + 1);
            self.aggregates.push((
                format!("{aggregate} FILTER (WHERE {covered}) AS {column}"),
                covered,
            ));
            return match otherwise {
                Some(otherwise) => format!("COALESCE(g.{column}, {otherwise})"),
                None => format!("g.{column}"),
            };
        }
        let read = match otherwise {
            Some(otherwise) => format!("COALESCE({aggregate}, {otherwise})"),
            None => aggregate.to_owned(),
        };
        format!(
            "(SELECT {read} FROM customer_activities a \
             WHERE a.customer_id = f.customer_id AND {covered})"
        )
    }

    /// The condition on `a` selecting the activities `p` covers (of any customer).
    fn activities(&mut self, p: &Predicate) -> String {
        let purchases = !matches!(
            p.key,
            FieldKey::InteractionCount | FieldKey::InteractionLastTime
        );
        // A purchase refunded in full is no purchase (`Activity::counts_as_purchase`).
        // Refunds live in their own table: no activity row is one.
        let mut sql = String::from(if purchases {
            COUNTS_AS_PURCHASE
        } else {
            "a.kind <> 'purchase'"
        });
        match p.window {
            None => {}
            Some(Window::LastDays(days)) => {
                let hours = self.bind(SqlValue::Int(days * 24), "integer");
                sql.push_str(&format!(
                    " AND a.occur_time > $1::timestamptz - make_interval(hours => {hours}) \
                     AND a.occur_time <= $1::timestamptz"
                ));
            }
            Some(Window::Range { start, end }) => {
                let start = self.bind(SqlValue::Timestamp(start), "timestamptz");
                let end = self.bind(SqlValue::Timestamp(end), "timestamptz");
                sql.push_str(&format!(
                    " AND a.occur_time >= {start} AND a.occur_time < {end}"
                ));
            }
        }
        self.filter(&p.filter, purchases, &mut sql);
        sql
    }

    fn filter(&mut self, filter: &Filter, purchases: bool, sql: &mut String) {
        if !filter.categories.is_empty() {
            let categories = self.bind(SqlValue::TextArray(filter.categories.clone()), "text[]");
            sql.push_str(&format!(" AND a.categories && {categories}"));
        }
        if !filter.channels.is_empty() {
            let channels = self.bind(SqlValue::TextArray(filter.channels.clone()), "text[]");
            sql.push_str(&format!(" AND a.channel = ANY({channels})"));
        }
        if !purchases && !filter.interaction_kinds.is_empty() {
            let kinds = self.bind(
                SqlValue::TextArray(filter.interaction_kinds.clone()),
                "text[]",
            );
            sql.push_str(&format!(" AND a.kind = ANY({kinds})"));
        }
    }

    /// Binds one operand as the SQL type of `value_type`.
    fn operand(&mut self, value_type: ValueType, value: &Value) -> String {
        match (value_type, value) {
            (ValueType::Double, v) => {
                self.bind(SqlValue::Double(v.as_f64().unwrap_or_default()), "float8")
            }
            (_, Value::String(v)) => self.bind(SqlValue::Text(v.clone()), "text"),
            (_, Value::Integer(v)) => self.bind(SqlValue::BigInt(*v), "bigint"),
            (_, Value::Double(v)) => self.bind(SqlValue::Double(*v), "float8"),
            (_, Value::Bool(v)) => self.bind(SqlValue::Bool(*v), "boolean"),
            (_, Value::Timestamp(v)) => self.bind(SqlValue::Timestamp(*v), "timestamptz"),
            (_, Value::Date(v)) => self.bind(SqlValue::Date(*v), "date"),
            // The sum is already restricted to the value's currency.
            (_, Value::Money(v)) => self.bind(SqlValue::BigInt(v.amount_minor), "bigint"),
            (_, Value::Days(v)) => self.bind(SqlValue::Int(*v), "integer"),
        }
    }

    /// Binds every operand as one array of the SQL type of `value_type`.
    fn operand_array(&mut self, value_type: ValueType, values: &[Value]) -> String {
        match value_type {
            ValueType::Integer => {
                let items = values
                    .iter()
                    .filter_map(|v| match v {
                        Value::Integer(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                self.bind(SqlValue::BigIntArray(items), "bigint[]")
            }
            ValueType::Double => {
                let items = values.iter().filter_map(Value::as_f64).collect();
                self.bind(SqlValue::DoubleArray(items), "float8[]")
            }
            _ => {
                let items = values
                    .iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                self.bind(SqlValue::TextArray(items), "text[]")
            }
        }
    }

    /// A two-valued test of the scalar `expr` (NULL when unset).
    fn scalar_test(&mut self, expr: &str, p: &Predicate) -> String {
        use Operator as O;
        let vt = p.value_type;
        let cmp = |this: &mut Self, op: &str| {
            let v = p
                .values
                .first()
                .map(|v| this.operand(vt, v))
                .unwrap_or_default();
            format!("COALESCE({expr} {op} {v}, false)")
        };
        match p.operator {
            O::IsSet => format!("({expr} IS NOT NULL)"),
            O::IsNotSet => format!("({expr} IS NULL)"),
            O::Equals => cmp(self, "="),
            O::NotEquals => cmp(self, "<>"),
            O::LessThan | O::Before => cmp(self, "<"),
            O::LessOrEqual => cmp(self, "<="),
            O::GreaterThan | O::After => cmp(self, ">"),
            O::GreaterOrEqual => cmp(self, ">="),
            O::In => {
                let list = self.operand_array(vt, &p.values);
                format!("COALESCE({expr} = ANY({list}), false)")
            }
            O::NotIn => {
                let list = self.operand_array(vt, &p.values);
                format!("COALESCE({expr} <> ALL({list}), false)")
            }
            O::Between => {
                let low = p
                    .values
                    .first()
                    .map(|v| self.operand(vt, v))
                    .unwrap_or_default();
                let high = p
                    .values
                    .get(1)
                    .map(|v| self.operand(vt, v))
                    .unwrap_or_default();
                format!("COALESCE({expr} BETWEEN {low} AND {high}, false)")
            }
            O::StartsWith => {
                let prefix = p
                    .values
                    .first()
                    .map(|v| self.operand(vt, v))
                    .unwrap_or_default();
                format!("COALESCE(starts_with({expr}, {prefix}), false)")
            }
            // Characters at the end compared with `=`: no pattern, so a `%`, `_` or `\` in the
            // value is itself.
            O::EndsWith => {
                let suffix = p
                    .values
                    .first()
                    .map(|v| self.operand(vt, v))
                    .unwrap_or_default();
                format!("COALESCE(right({expr}, length({suffix})) = {suffix}, false)")
            }
            // The bound pattern is LIKE syntax with `\` as the escape (`domain::pattern`,
            // validated not to end with a lone `\`).
            O::MatchesPattern => {
                let pattern = p
                    .values
                    .first()
                    .map(|v| self.operand(vt, v))
                    .unwrap_or_default();
                format!("COALESCE({expr} LIKE {pattern} ESCAPE '\\', false)")
            }
            O::WithinLast | O::NotWithinLast => {
                let days = match p.values.first() {
                    Some(Value::Days(days)) => *days,
                    _ => 0,
                };
                let hours = self.bind(SqlValue::Int(days * 24), "integer");
                let cutoff = format!("($1::timestamptz - make_interval(hours => {hours}))");
                if p.operator == O::WithinLast {
                    format!("COALESCE({expr} > {cutoff} AND {expr} <= $1::timestamptz, false)")
                } else {
                    format!("COALESCE({expr} <= {cutoff}, false)")
                }
            }
            // List operators never reach a scalar (validation).
            O::Contains | O::NotContains | O::ContainsAny | O::ContainsAll => "false".to_owned(),
        }
    }

    /// A test of the `text[]` expression `list` (never NULL, empty when unset).
    fn list_test(&mut self, list: &str, p: &Predicate) -> String {
        use Operator as O;
        match p.operator {
            O::IsSet => format!("(cardinality({list}) > 0)"),
            O::IsNotSet => format!("(cardinality({list}) = 0)"),
            O::Contains => {
                let v = self.list_operand(p);
                format!("COALESCE({v} = ANY({list}), false)")
            }
            O::NotContains => {
                let v = self.list_operand(p);
                format!("COALESCE(cardinality({list}) > 0 AND NOT ({v} = ANY({list})), false)")
            }
            O::ContainsAny => {
                let values = self.operand_array(ValueType::StringList, &p.values);
                format!("COALESCE({list} && {values}, false)")
            }
            O::ContainsAll => {
                let values = self.operand_array(ValueType::StringList, &p.values);
                format!("COALESCE({list} @> {values}, false)")
            }
            // Scalar operators never reach a list (validation).
            _ => "false".to_owned(),
        }
    }

    fn list_operand(&mut self, p: &Predicate) -> String {
        match p.values.first() {
            Some(v) => self.operand(ValueType::StringList, v),
            None => "NULL::text".to_owned(),
        }
    }
}
