//! The ledger: EarnPoints, RedeemPoints, AdjustPoints, ReversePoints, GetLedgerEntry,
//! ListLedgerEntries, CalculatePurchasePoints. Each handler parses its request (`convert`),
//! calls one use case in `workflow::ledger` or `workflow::reversals` and converts the answer
//! (`wire::ledger`).

use custops_common::error::ServiceError;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::convert::{self, parse_uuid};
use super::parse::{member_ref, request_key};
use super::{LoyaltyApi, Rpc, ok};
use crate::domain::Keyed;
use crate::domain::ledger::{EarnCommand, EarnSource};
use crate::store::ledger::StatementFilter;
use crate::wire;
use crate::workflow::{ledger, reversals};

#[tracing::instrument(skip_all)]
pub(super) async fn earn_points(
    api: &LoyaltyApi,
    request: Request<pb::EarnPointsRequest>,
) -> Rpc<pb::EarnPointsResponse> {
    let key = request_key(&request, "EarnPoints", &request.get_ref().request_id);
    let cmd = Keyed::try_from(request.into_inner())?;
    let reply = ledger::earn_points(&api.ctx, &key, cmd, |out| {
        let currency = out.member.currency.clone();
        pb::EarnPointsResponse {
            tier_change: out
                .tier_change
                .map(|c| wire::tiers::tier_change_pb(&out.member, c, &currency)),
            ledger_entry: Some(out.entry.into()),
            member: Some(out.member.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn redeem_points(
    api: &LoyaltyApi,
    request: Request<pb::RedeemPointsRequest>,
) -> Rpc<pb::RedeemPointsResponse> {
    let key = request_key(&request, "RedeemPoints", &request.get_ref().request_id);
    let cmd = Keyed::try_from(request.into_inner())?;
    let reply = ledger::redeem_points(&api.ctx, &key, cmd, |out| pb::RedeemPointsResponse {
        ledger_entry: Some(out.entry.into()),
        member: Some(out.member.into()),
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn adjust_points(
    api: &LoyaltyApi,
    request: Request<pb::AdjustPointsRequest>,
) -> Rpc<pb::AdjustPointsResponse> {
    let key = request_key(&request, "AdjustPoints", &request.get_ref().request_id);
    let cmd = Keyed::try_from(request.into_inner())?;
    let reply = ledger::adjust_points(&api.ctx, &key, cmd, |out| {
        let currency = out.member.currency.clone();
        pb::AdjustPointsResponse {
            tier_change: out
                .tier_change
                .map(|c| wire::tiers::tier_change_pb(&out.member, c, &currency)),
            ledger_entry: Some(out.entry.into()),
            member: Some(out.member.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn reverse_points(
    api: &LoyaltyApi,
    request: Request<pb::ReversePointsRequest>,
) -> Rpc<pb::ReversePointsResponse> {
    let key = request_key(&request, "ReversePoints", &request.get_ref().request_id);
    let cmd = Keyed::try_from(request.into_inner())?;
    let reply = reversals::reverse_points(&api.ctx, &key, cmd, |out| pb::ReversePointsResponse {
        ledger_entry: Some(out.entry.into()),
        member: Some(out.member.into()),
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_ledger_entry(
    api: &LoyaltyApi,
    request: Request<pb::GetLedgerEntryRequest>,
) -> Rpc<pb::GetLedgerEntryResponse> {
    let id = parse_uuid(&request.get_ref().ledger_entry_id)
        .map_err(|d| ServiceError::invalid_argument("ledger_entry_id", d))?;
    let entry = ledger::get(&api.ctx, id).await?;
    ok(pb::GetLedgerEntryResponse {
        ledger_entry: Some(entry.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_ledger_entries(
    api: &LoyaltyApi,
    request: Request<pb::ListLedgerEntriesRequest>,
) -> Rpc<pb::ListLedgerEntriesResponse> {
    let req = request.into_inner();
    let member = member_ref("member", req.member.clone())?;
    let page = api.page_tokens.page::<_, Uuid>(&req)?;
    let filter = req.filter.clone().unwrap_or_default();
    let range = filter.create_time_range.unwrap_or_default();
    let time = |field: &str, t: Option<&prost_types::Timestamp>| {
        t.map(|t| convert::from_timestamp(t).map_err(|d| ServiceError::invalid_argument(field, d)))
            .transpose()
    };
    let statement = StatementFilter {
        kinds: convert::entry_kinds(&filter.kinds)?,
        from: time(
            "filter.create_time_range.start_time",
            range.start_time.as_ref(),
        )?,
        until: time("filter.create_time_range.end_time", range.end_time.as_ref())?,
        order_id: (!filter.order_id.is_empty()).then_some(filter.order_id),
        oldest_first: req.oldest_first,
    };
    let mut rows =
        ledger::statement(&api.ctx, &member, &statement, page.after, page.fetch()).await?;
    let next_page_token = page.finish(&mut rows, |e| e.ledger_entry_id)?;
    ok(pb::ListLedgerEntriesResponse {
        ledger_entries: rows.into_iter().map(Into::into).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn calculate_purchase_points(
    api: &LoyaltyApi,
    request: Request<pb::CalculatePurchasePointsRequest>,
) -> Rpc<pb::CalculatePurchasePointsResponse> {
    let req = request.into_inner();
    let program_id =
        parse_uuid(&req.program_id).map_err(|d| ServiceError::invalid_argument("program_id", d))?;
    // The purchase is checked as an earn would check it.
    let earn = Keyed::<EarnCommand>::try_from(pb::EarnPointsRequest {
        request_id: "calculate".to_owned(),
        member: Some(pb::MemberRef {
            key: Some(pb::member_ref::Key::MemberId(Uuid::nil().to_string())),
        }),
        source: req.purchase.clone().map(|mut p| {
            if p.order_id.is_empty() {
                p.order_id = "calculation".to_owned();
            }
            pb::earn_points_request::Source::Purchase(p)
        }),
        ..Default::default()
    })?;
    let EarnSource::Purchase(purchase) = earn.command.source else {
        return Err(ServiceError::invalid_argument("purchase", "required").into());
    };
    // A customer id that does not parse is no member: the base tier's points are answered.
    let customer_id = parse_uuid(&req.customer_id).ok();
    let points = ledger::calculate(&api.ctx, program_id, customer_id, purchase).await?;
    ok(pb::CalculatePurchasePointsResponse {
        calculation: Some(wire::ledger::calculation_pb(
            points.calculation,
            &points.currency,
        )),
        pending: points.pending,
    })
}
