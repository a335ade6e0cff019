//! Tiers and their benefits: ListTierChanges, ListEntitlements, CheckEntitlement. Each handler
//! parses its request, calls one use case in `workflow::tiers` and converts the answer
//! (`wire::tiers`, `wire::programs`).

use custops_common::error::{ServiceError, Violations};
use custops_common::paging::page_size;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::parse::{from_timestamp, member_ref, parse_uuid};
use super::{LoyaltyApi, Rpc, ok};
use crate::domain::benefit::NotEntitled;
use crate::store::tiers::TierChangeFilter;
use crate::wire;
use crate::workflow::tiers;

#[tracing::instrument(skip_all)]
pub(super) async fn list_tier_changes(
    api: &LoyaltyApi,
    request: Request<pb::ListTierChangesRequest>,
) -> Rpc<pb::ListTierChangesResponse> {
    let req = request.into_inner();
    let page = api.page_tokens.page::<_, Uuid>(&req);
    let mut v = Violations::new();
    let member_id = (!req.member_id.is_empty())
        .then(|| v.take("member_id", parse_uuid(&req.member_id)))
        .flatten();
    let program_id = (!req.program_id.is_empty())
        .then(|| v.take("program_id", parse_uuid(&req.program_id)))
        .flatten();
    if req.member_id.is_empty() && req.program_id.is_empty() {
        v.add("member_id", "member_id or program_id is required");
    }
    let mut directions = Vec::new();
    for d in &req.directions {
        match pb::TierChangeDirection::try_from(*d) {
            Ok(pb::TierChangeDirection::Unspecified) | Err(_) => {
                v.add("directions", "INITIAL, UPGRADE or DOWNGRADE");
            }
            Ok(d) => directions.push(d as i16),
        }
    }
    let range = req.change_time_range.unwrap_or_default();
    let from = range
        .start_time
        .as_ref()
        .and_then(|t| v.take("change_time_range.start_time", from_timestamp(t)));
    let until = range
        .end_time
        .as_ref()
        .and_then(|t| v.take("change_time_range.end_time", from_timestamp(t)));
    v.take(
        "page_size",
        page_size(req.page_size).map_err(|e| e.message()),
    );
    v.into_result()?;
    let page = page?;
    let filter = TierChangeFilter {
        member_id,
        merged_members: true,
        program_id,
        directions,
        from,
        until,
    };
    let mut rows = tiers::list(&api.ctx, &filter, page.after, page.fetch()).await?;
    let next_page_token = page.finish(&mut rows, |c| c.tier_change_id)?;
    ok(pb::ListTierChangesResponse {
        tier_changes: rows
            .into_iter()
            .map(wire::tiers::tier_change_row_pb)
            .collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_entitlements(
    api: &LoyaltyApi,
    request: Request<pb::ListEntitlementsRequest>,
) -> Rpc<pb::ListEntitlementsResponse> {
    let member = member_ref("member", request.into_inner().member)?;
    let held = tiers::entitlements(&api.ctx, &member).await?;
    ok(pb::ListEntitlementsResponse {
        member_id: held.member_id.to_string(),
        tier_code: held.tier_code,
        entitlements: held
            .entitlements
            .into_iter()
            .map(wire::programs::entitlement_pb)
            .collect(),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn check_entitlement(
    api: &LoyaltyApi,
    request: Request<pb::CheckEntitlementRequest>,
) -> Rpc<pb::CheckEntitlementResponse> {
    let req = request.into_inner();
    let member = member_ref("member", req.member)?;
    if req.benefit_code.is_empty() {
        return Err(ServiceError::invalid_argument("benefit_code", "required").into());
    }
    let check = tiers::check_entitlement(&api.ctx, member, &req.benefit_code).await?;
    let mut response = pb::CheckEntitlementResponse {
        lowest_eligible_tier_code: check.lowest_eligible_tier_code,
        ..Default::default()
    };
    let Some((tier_code, held)) = check.member else {
        response.not_entitled_reason = pb::NotEntitledReason::NotEnrolled as i32;
        return ok(response);
    };
    response.tier_code = tier_code;
    match held {
        Ok(entitlement) => {
            response.entitled = true;
            response.entitlement = Some(wire::programs::entitlement_pb(entitlement));
        }
        Err(NotEntitled::MemberNotActive) => {
            response.not_entitled_reason = pb::NotEntitledReason::MemberNotActive as i32;
        }
        Err(NotEntitled::TierNotEligible) => {
            response.not_entitled_reason = pb::NotEntitledReason::TierNotEligible as i32;
        }
    }
    ok(response)
}
