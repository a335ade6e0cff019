//! The `custops.loyalty.v1.LoyaltyService` API (transport only): each RPC is handled in the
//! submodule for its area, which parses the request into domain values (every bad field
//! collected), calls one use case in `workflow` and converts the answer (`crate::wire`).
//! Failures become a `Status` in `error`, and nowhere else. Mutations with a request id pass
//! their reply to the use case, which records it for replays. RPCs not implemented yet answer
//! UNIMPLEMENTED through the generated default stubs.
//!
//! - `programs`: programs and their rules.
//! - `members`: enrolment, member reads, status changes, lots, expiring points, the
//!   data-subject export.
//! - `ledger`: earn, redeem, adjust, reverse, entries and statements, purchase calculations.
//! - `rewards`: the catalog, redemptions and their reversals.
//! - `tiers`: tier history and entitlements.
//! - `jobs`: the scheduled jobs on request.
//! - `parse`: the field parsers the areas share; `error`: `StoreError` → `Status`.

pub mod error;
mod jobs;
mod ledger;
mod members;
mod parse;
mod programs;
mod rewards;
mod tiers;

use custops_common::paging::PageTokens;
use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::loyalty::v1::loyalty_service_server::{
    LoyaltyService, LoyaltyServiceServer,
};
use tonic::{Request, Response, Status};

use crate::workflow::Context;

type Rpc<T> = Result<Response<T>, Status>;

/// The gRPC handlers of the loyalty service.
#[derive(Debug, Clone)]
pub struct LoyaltyApi {
    ctx: Context,
    page_tokens: PageTokens,
}

/// The API over the use cases of `ctx`, signing page tokens with `page_tokens`, wrapped for
/// serving, with explicit message size limits.
pub fn server(ctx: Context, page_tokens: PageTokens) -> LoyaltyServiceServer<LoyaltyApi> {
    LoyaltyServiceServer::new(LoyaltyApi { ctx, page_tokens })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

#[tonic::async_trait]
impl LoyaltyService for LoyaltyApi {
    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> Rpc<pb::CreateProgramResponse> {
        programs::create_program(self, request).await
    }

    async fn get_program(
        &self,
        request: Request<pb::GetProgramRequest>,
    ) -> Rpc<pb::GetProgramResponse> {
        programs::get_program(self, request).await
    }

    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> Rpc<pb::ListProgramsResponse> {
        programs::list_programs(self, request).await
    }

    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> Rpc<pb::UpdateProgramResponse> {
        programs::update_program(self, request).await
    }

    async fn enrol_member(
        &self,
        request: Request<pb::EnrolMemberRequest>,
    ) -> Rpc<pb::EnrolMemberResponse> {
        members::enrol_member(self, request).await
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Rpc<pb::GetMemberResponse> {
        members::get_member(self, request).await
    }

    async fn get_member_by_customer(
        &self,
        request: Request<pb::GetMemberByCustomerRequest>,
    ) -> Rpc<pb::GetMemberByCustomerResponse> {
        members::get_member_by_customer(self, request).await
    }

    async fn earn_points(
        &self,
        request: Request<pb::EarnPointsRequest>,
    ) -> Rpc<pb::EarnPointsResponse> {
        ledger::earn_points(self, request).await
    }

    async fn redeem_points(
        &self,
        request: Request<pb::RedeemPointsRequest>,
    ) -> Rpc<pb::RedeemPointsResponse> {
        ledger::redeem_points(self, request).await
    }

    async fn adjust_points(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> Rpc<pb::AdjustPointsResponse> {
        ledger::adjust_points(self, request).await
    }

    async fn reverse_points(
        &self,
        request: Request<pb::ReversePointsRequest>,
    ) -> Rpc<pb::ReversePointsResponse> {
        ledger::reverse_points(self, request).await
    }

    async fn get_ledger_entry(
        &self,
        request: Request<pb::GetLedgerEntryRequest>,
    ) -> Rpc<pb::GetLedgerEntryResponse> {
        ledger::get_ledger_entry(self, request).await
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Rpc<pb::ListLedgerEntriesResponse> {
        ledger::list_ledger_entries(self, request).await
    }

    async fn calculate_purchase_points(
        &self,
        request: Request<pb::CalculatePurchasePointsRequest>,
    ) -> Rpc<pb::CalculatePurchasePointsResponse> {
        ledger::calculate_purchase_points(self, request).await
    }

    async fn suspend_member(
        &self,
        request: Request<pb::SuspendMemberRequest>,
    ) -> Rpc<pb::SuspendMemberResponse> {
        members::suspend_member(self, request).await
    }

    async fn reactivate_member(
        &self,
        request: Request<pb::ReactivateMemberRequest>,
    ) -> Rpc<pb::ReactivateMemberResponse> {
        members::reactivate_member(self, request).await
    }

    async fn close_member(
        &self,
        request: Request<pb::CloseMemberRequest>,
    ) -> Rpc<pb::CloseMemberResponse> {
        members::close_member(self, request).await
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Rpc<pb::ListMembersResponse> {
        members::list_members(self, request).await
    }

    async fn list_point_lots(
        &self,
        request: Request<pb::ListPointLotsRequest>,
    ) -> Rpc<pb::ListPointLotsResponse> {
        members::list_point_lots(self, request).await
    }

    async fn get_expiring_points(
        &self,
        request: Request<pb::GetExpiringPointsRequest>,
    ) -> Rpc<pb::GetExpiringPointsResponse> {
        members::get_expiring_points(self, request).await
    }

    async fn list_tier_changes(
        &self,
        request: Request<pb::ListTierChangesRequest>,
    ) -> Rpc<pb::ListTierChangesResponse> {
        tiers::list_tier_changes(self, request).await
    }

    async fn list_entitlements(
        &self,
        request: Request<pb::ListEntitlementsRequest>,
    ) -> Rpc<pb::ListEntitlementsResponse> {
        tiers::list_entitlements(self, request).await
    }

    async fn check_entitlement(
        &self,
        request: Request<pb::CheckEntitlementRequest>,
    ) -> Rpc<pb::CheckEntitlementResponse> {
        tiers::check_entitlement(self, request).await
    }

    async fn run_point_expiry(
        &self,
        request: Request<pb::RunPointExpiryRequest>,
    ) -> Rpc<pb::RunPointExpiryResponse> {
        jobs::run_point_expiry(self, request).await
    }

    async fn run_point_release(
        &self,
        request: Request<pb::RunPointReleaseRequest>,
    ) -> Rpc<pb::RunPointReleaseResponse> {
        jobs::run_point_release(self, request).await
    }

    async fn run_tier_review(
        &self,
        request: Request<pb::RunTierReviewRequest>,
    ) -> Rpc<pb::RunTierReviewResponse> {
        jobs::run_tier_review(self, request).await
    }

    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> Rpc<pb::CreateRewardResponse> {
        rewards::create_reward(self, request).await
    }

    async fn reverse_reward_redemption(
        &self,
        request: Request<pb::ReverseRewardRedemptionRequest>,
    ) -> Rpc<pb::ReverseRewardRedemptionResponse> {
        rewards::reverse_reward_redemption(self, request).await
    }

    async fn adjust_reward_stock(
        &self,
        request: Request<pb::AdjustRewardStockRequest>,
    ) -> Rpc<pb::AdjustRewardStockResponse> {
        rewards::adjust_reward_stock(self, request).await
    }

    async fn get_reward_redemption(
        &self,
        request: Request<pb::GetRewardRedemptionRequest>,
    ) -> Rpc<pb::GetRewardRedemptionResponse> {
        rewards::get_reward_redemption(self, request).await
    }

    async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> Rpc<pb::ListRewardsResponse> {
        rewards::list_rewards(self, request).await
    }

    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> Rpc<pb::UpdateRewardResponse> {
        rewards::update_reward(self, request).await
    }

    async fn list_reward_redemptions(
        &self,
        request: Request<pb::ListRewardRedemptionsRequest>,
    ) -> Rpc<pb::ListRewardRedemptionsResponse> {
        rewards::list_reward_redemptions(self, request).await
    }

    async fn get_reward(
        &self,
        request: Request<pb::GetRewardRequest>,
    ) -> Rpc<pb::GetRewardResponse> {
        rewards::get_reward(self, request).await
    }

    async fn export_customer_data(
        &self,
        request: Request<pb::ExportCustomerDataRequest>,
    ) -> Rpc<pb::ExportCustomerDataResponse> {
        members::export_customer_data(self, request).await
    }

    async fn redeem_reward(
        &self,
        request: Request<pb::RedeemRewardRequest>,
    ) -> Rpc<pb::RedeemRewardResponse> {
        rewards::redeem_reward(self, request).await
    }
}
