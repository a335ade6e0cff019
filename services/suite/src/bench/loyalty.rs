//! `loyalty.earn` and `loyalty.earn_hot`: the write path of the points ledger against pgbench
//! on the same Postgres (not measured yet).

use super::Harness;
use super::report::Row;

/// The rows of this group.
pub fn row_names() -> Vec<String> {
    Vec::new()
}

/// Runs the selected rows of this group.
pub async fn run(_harness: &Harness, _rows: &mut Vec<Row>) -> anyhow::Result<()> {
    Ok(())
}
