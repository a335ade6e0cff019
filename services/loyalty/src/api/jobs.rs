//! The scheduled jobs on request, for operators: RunPointExpiry, RunPointRelease,
//! RunTierReview. Each runs the job the in-process scheduler runs (`workflow::jobs`), at the
//! service clock's now, and reports what it did.

use custops_common::error::ServiceError;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::{Request, Status};
use uuid::Uuid;

use super::parse::parse_uuid;
use super::{LoyaltyApi, Rpc, ok};
use crate::wire;
use crate::workflow::jobs::{self, Job};

#[tracing::instrument(skip_all)]
pub(super) async fn run_point_expiry(
    api: &LoyaltyApi,
    request: Request<pb::RunPointExpiryRequest>,
) -> Rpc<pb::RunPointExpiryResponse> {
    let req = request.into_inner();
    let (program, max) = job_scope(&req.program_id, req.max_members)?;
    let (now, report) = jobs::run_now(&api.ctx, Job::PointExpiry, program, max).await?;
    ok(pb::RunPointExpiryResponse {
        as_of_time: Some(wire::timestamp(now)),
        members_processed: report.members,
        lots_expired: report.lots,
        points_expired: report.points,
        more_due: report.more_due,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn run_point_release(
    api: &LoyaltyApi,
    request: Request<pb::RunPointReleaseRequest>,
) -> Rpc<pb::RunPointReleaseResponse> {
    let req = request.into_inner();
    let (program, max) = job_scope(&req.program_id, req.max_members)?;
    let (now, report) = jobs::run_now(&api.ctx, Job::PointRelease, program, max).await?;
    ok(pb::RunPointReleaseResponse {
        as_of_time: Some(wire::timestamp(now)),
        members_processed: report.members,
        lots_released: report.lots,
        points_released: report.points,
        more_due: report.more_due,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn run_tier_review(
    api: &LoyaltyApi,
    request: Request<pb::RunTierReviewRequest>,
) -> Rpc<pb::RunTierReviewResponse> {
    let req = request.into_inner();
    let (program, max) = job_scope(&req.program_id, req.max_members)?;
    let (now, report) = jobs::run_now(&api.ctx, Job::TierReview, program, max).await?;
    ok(pb::RunTierReviewResponse {
        as_of_time: Some(wire::timestamp(now)),
        members_reviewed: report.members,
        downgrades_scheduled: report.downgrades_scheduled,
        downgrades_applied: report.downgrades_applied,
        downgrades_cancelled: report.downgrades_cancelled,
        upgrades: report.upgrades,
        more_due: report.more_due,
    })
}

/// The optional program filter and member cap of a job request.
fn job_scope(program_id: &str, max_members: i32) -> Result<(Option<Uuid>, i64), Status> {
    let program = if program_id.is_empty() {
        None
    } else {
        Some(parse_uuid(program_id).map_err(|d| ServiceError::invalid_argument("program_id", d))?)
    };
    if !(0..=1_000_000).contains(&max_members) {
        return Err(ServiceError::invalid_argument("max_members", "must be 0-1,000,000").into());
    }
    Ok((program, i64::from(max_members)))
}
