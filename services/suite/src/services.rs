//! The only place that maps a [`ServiceKind`] to its crate, so adding a service touches one
//! match per question.

use custops_common::config::ServiceSettings;
use custops_common::server::Application;
use custops_common::service::ServiceKind;
use sqlx::migrate::Migrator;

/// Builds (connects, migrates, binds) the service.
pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
    match settings.service {
        ServiceKind::Profiles => custops_profiles::build(settings).await,
        ServiceKind::Segmentation => custops_segmentation::build(settings).await,
        ServiceKind::Loyalty => custops_loyalty::build(settings).await,
        ServiceKind::Feedback => custops_feedback::build(settings).await,
    }
}

/// The service's own migrations (the shared ones are added by `custops_common::db`).
pub fn migrations(service: ServiceKind) -> &'static Migrator {
    match service {
        ServiceKind::Profiles => &custops_profiles::MIGRATIONS,
        ServiceKind::Segmentation => &custops_segmentation::MIGRATIONS,
        ServiceKind::Loyalty => &custops_loyalty::MIGRATIONS,
        ServiceKind::Feedback => &custops_feedback::MIGRATIONS,
    }
}
