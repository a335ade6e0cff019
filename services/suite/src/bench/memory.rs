//! `memory.idle.<service>`: the resident memory of each service started alone, as a child
//! process, on an empty database (migrated at start), once it has settled; against the bare
//! tonic echo server started the same way. The goal is the mission's: under 50 MiB idle.

use custops_common::service::ServiceKind;
use serde_json::json;

use super::child::{Child, service_env};
use super::database::BenchDatabase;
use super::report::Row;
use super::{Harness, finished};

/// The mission's budget for an idle service.
const IDLE_BUDGET_MIB: f64 = 50.0;

/// The rows of this group.
pub fn row_names() -> Vec<String> {
    ServiceKind::ALL
        .iter()
        .map(|service| format!("memory.idle.{}", service.name()))
        .collect()
}

/// Starts each selected service alone and reads its memory.
pub async fn run(harness: &Harness, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let names = row_names();
    if !harness.selection.wants_any(&names) {
        return Ok(());
    }
    let db = BenchDatabase::create(&harness.admin_database_url, "memory").await?;
    let echo = Child::start(
        "memory-echo",
        &["bench-echo".to_owned()],
        &[],
        &harness.log_dir,
    )
    .await?;
    tokio::time::sleep(harness.scale.settle).await;
    let echo_rss = echo.rss_mib()?;
    echo.stop().await?;

    for (service, name) in ServiceKind::ALL.into_iter().zip(names) {
        if !harness.selection.wants(&name) {
            continue;
        }
        let child = Child::start(
            &format!("memory-{}", service.name()),
            &["bench-serve".to_owned(), service.name().to_owned()],
            &service_env(db.url(), harness.redis_url.as_deref()),
            &harness.log_dir,
        )
        .await?;
        tokio::time::sleep(harness.scale.settle).await;
        let rss = child.rss_mib()?;
        child.stop().await?;
        let row = Row::new(name, "MiB", rss, echo_rss)
            .custops_below(IDLE_BUDGET_MIB)
            .params(json!({
                "process": format!("custops bench-serve {} (alone)", service.name()),
                "database": "empty, migrated at start",
                "redis": harness.redis_url.is_some(),
                "settled_s": harness.scale.settle.as_secs_f64(),
                "measure": "VmRSS of /proc/<pid>/status",
                "baseline": "custops bench-echo, idle, measured the same way",
            }));
        finished(rows, row);
    }
    Ok(())
}
