//! sqlx queries on the `segmentation` schema.

pub mod catalog;
pub mod compile;
pub mod computed;
pub mod configs;
pub mod custom_events;
pub mod facts;
pub mod jobs;
pub mod lifecycle;
pub mod memberships;
pub mod predictions;
pub mod preview;
pub mod recompute;
pub mod rfm;
pub mod segments;
pub mod settings;
pub mod uploads;

use sqlx::PgPool;

/// A transaction for set-based work over the whole customer base: the pool's statement and
/// lock timeouts (seconds, meant for API calls) are lifted to an hour for it.
pub async fn begin_long(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = '1h'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL lock_timeout = '1h'")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Which customers a set-based statement covers. The two are separate statements (a filter
/// `$n IS NULL OR customer_id = ANY($n)` would keep the planner from the customer index once it
/// caches a generic plan).
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    Everyone,
    Customers(&'a [String]),
}

impl<'a> Who<'a> {
    /// The condition on `column`, with the customer ids as parameter `$n` (bind
    /// [`Who::ids`]; NULL for everyone).
    pub(crate) fn condition(self, column: &str, n: u8) -> String {
        match self {
            Self::Everyone => format!("${n}::text[] IS NULL"),
            Self::Customers(_) => format!("{column} = ANY(${n}::text[])"),
        }
    }

    /// The parameter of [`Who::condition`].
    pub(crate) fn ids(self) -> Option<&'a [String]> {
        match self {
            Self::Everyone => None,
            Self::Customers(ids) => Some(ids),
        }
    }
}
