//! Updating a versioned config (RFM, lifecycle, prediction), one way for all three: the
//! request's change is applied under the config's lock, an invalid change is INVALID_ARGUMENT
//! whatever the etag, a stale etag is ABORTED, an unchanged config is answered as it stands,
//! and a changed one is saved with a new etag together with the recompute job it queues.

use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::lifecycle::LifecycleConfig;
use crate::domain::prediction_config::PredictionConfig;
use crate::domain::rfm::{RfmConfig, RfmState};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::jobs as job_store;
use crate::store::lifecycle::{self, LifecycleState};
use crate::store::predictions::{self, PredictionState};
use crate::store::{rfm, settings};

/// A stored config with its version.
pub trait Versioned: Sized {
    type Config: PartialEq;
    /// Its `configs` row, which is also the config a changed one's recompute job runs for.
    const ROW: &'static str;
    fn config(&self) -> &Self::Config;
    fn etag(&self) -> &str;
    /// Takes `config` as a new version made at `update_time`.
    fn set(&mut self, config: Self::Config, update_time: DateTime<Utc>);
    fn load(conn: &mut PgConnection) -> impl Future<Output = sqlx::Result<Self>> + Send;
    fn save(
        &self,
        conn: &mut PgConnection,
        update_time: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}

/// The config with its version.
pub async fn current<V: Versioned>(state: &AppState) -> Result<V> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    Ok(V::load(&mut conn).await?)
}

/// Applies `change` (the request's masked fields merged into the current config and validated,
/// by the caller) under the config's lock, then checks `etag`. A changed config is saved and
/// its recompute job queued (the job's id returned); an unchanged one is answered as it stands.
pub async fn update<V: Versioned>(
    state: &AppState,
    requester: &str,
    etag: &str,
    change: impl FnOnce(&V::Config) -> Result<V::Config>,
) -> Result<(V, Option<Uuid>)> {
    let now = state.clock.now();
    let mut tx = state.pool.begin().await?;
    settings::lock_config(&mut tx, V::ROW).await?;
    let mut current = V::load(&mut tx).await?;
    let next = change(current.config())?;
    if !etag.is_empty() && etag != current.etag() {
        return Err(Error::StaleConfig);
    }
    if &next == current.config() {
        return Ok((current, None));
    }
    current.set(next, now);
    current.save(&mut tx, now).await?;
    let job = job_store::insert_config_recompute(&mut tx, V::ROW, requester, now).await?;
    tx.commit().await?;
    Ok((current, Some(job)))
}

/// A fresh etag for a new version.
fn new_etag() -> String {
    Uuid::now_v7().simple().to_string()
}

impl Versioned for RfmState {
    type Config = RfmConfig;
    const ROW: &'static str = rfm::ROW;
    fn config(&self) -> &RfmConfig {
        &self.config
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn set(&mut self, config: RfmConfig, update_time: DateTime<Utc>) {
        self.config = config;
        self.etag = new_etag();
        self.update_time = Some(update_time);
    }
    async fn load(conn: &mut PgConnection) -> sqlx::Result<Self> {
        rfm::load(conn).await
    }
    async fn save(&self, conn: &mut PgConnection, update_time: DateTime<Utc>) -> sqlx::Result<()> {
        rfm::save(conn, self, update_time).await
    }
}

impl Versioned for LifecycleState {
    type Config = LifecycleConfig;
    const ROW: &'static str = lifecycle::ROW;
    fn config(&self) -> &LifecycleConfig {
        &self.config
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn set(&mut self, config: LifecycleConfig, update_time: DateTime<Utc>) {
        self.config = config;
        self.etag = new_etag();
        self.update_time = Some(update_time);
    }
    async fn load(conn: &mut PgConnection) -> sqlx::Result<Self> {
        lifecycle::load(conn).await
    }
    async fn save(&self, conn: &mut PgConnection, update_time: DateTime<Utc>) -> sqlx::Result<()> {
        lifecycle::save(conn, &self.config, &self.etag, update_time).await
    }
}

impl Versioned for PredictionState {
    type Config = PredictionConfig;
    const ROW: &'static str = predictions::ROW;
    fn config(&self) -> &PredictionConfig {
        &self.config
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn set(&mut self, config: PredictionConfig, update_time: DateTime<Utc>) {
        self.config = config;
        self.etag = new_etag();
        self.update_time = Some(update_time);
    }
    async fn load(conn: &mut PgConnection) -> sqlx::Result<Self> {
        predictions::load_config(conn).await
    }
    async fn save(&self, conn: &mut PgConnection, update_time: DateTime<Utc>) -> sqlx::Result<()> {
        predictions::save_config(conn, self, update_time).await
    }
}
