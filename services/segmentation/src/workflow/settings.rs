//! The evaluation settings: the time zone of "today" in rules, and the intervals of the full
//! recompute and the rollover pass.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::segments::new_etag;
use crate::store::settings::{self, EvaluationSettings};

/// An UpdateEvaluationSettings request past the checks that need no database: `Some` for each
/// masked field.
#[derive(Debug, Clone)]
pub struct SettingsChange {
    /// Empty: no etag check.
    pub etag: String,
    /// Checked against the database's time zones here.
    pub time_zone: Option<String>,
    pub full_recompute_interval: Option<Duration>,
    pub rollover_interval: Option<Duration>,
    pub activity_retention_days: Option<i32>,
}

/// The settings (the defaults when never updated).
pub async fn get(state: &AppState) -> Result<EvaluationSettings> {
    Ok(settings::get(&mut *custops_common::db::read(&state.pool).await?).await?)
}

/// Applies the masked changes; nothing changed: the current settings, nothing written.
pub async fn update(state: &AppState, change: SettingsChange) -> Result<EvaluationSettings> {
    let mut tx = state.pool.begin().await?;
    if let Some(zone) = &change.time_zone
        && (zone.is_empty() || zone.len() > 64 || !settings::valid_time_zone(&mut tx, zone).await?)
    {
        return Err(Error::invalid(
            "evaluation_settings.time_zone",
            "not an IANA time zone known to the database",
        ));
    }
    let current = settings::get_for_update(&mut tx).await?;
    if !change.etag.is_empty() && change.etag != current.etag {
        return Err(Error::StaleSettings);
    }
    let mut next = current.clone();
    if let Some(zone) = change.time_zone {
        next.time_zone = zone;
    }
    if let Some(full) = change.full_recompute_interval {
        next.full_recompute_interval = full;
    }
    if let Some(rollover) = change.rollover_interval {
        next.rollover_interval = rollover;
    }
    if let Some(days) = change.activity_retention_days {
        next.activity_retention_days = days;
    }
    if next == current {
        return Ok(current);
    }
    next.update_time = Some(state.clock.now());
    next.etag = new_etag();
    settings::put(&mut tx, &next).await?;
    tx.commit().await?;
    Ok(next)
}
