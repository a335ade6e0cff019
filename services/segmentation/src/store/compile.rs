//! Compiles a rule to one parameterised SQL condition over `customer_facts f`.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use crate::domain::facts::EvalContext;
use crate::domain::rule::Rule;

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

/// One boolean SQL expression over the alias `f` (`customer_facts f`): `$1` is the evaluation
/// time T (timestamptz), `$2` today (date), `$3…` are `binds` in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    pub sql: String,
    pub binds: Vec<SqlValue>,
}

/// Compiles `rule`.
pub fn compile(_rule: &Rule) -> CompiledRule {
    CompiledRule {
        sql: "false".to_owned(),
        binds: Vec::new(),
    }
}

impl CompiledRule {
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

/// The ids of every customer in `customer_facts` matching `rule` at `ctx`, ordered.
pub async fn matching_customers(
    conn: &mut PgConnection,
    rule: &Rule,
    ctx: &EvalContext,
) -> Result<Vec<String>, sqlx::Error> {
    let compiled = compile(rule);
    let sql = format!(
        "SELECT f.customer_id FROM customer_facts f WHERE {} ORDER BY 1",
        compiled.sql
    );
    // The text holds only catalog-defined SQL and placeholders; every value is bound.
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ctx.now)
        .bind(ctx.today);
    let rows = compiled.bind(query).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| sqlx::Row::try_get::<String, _>(row, 0))
        .collect()
}
