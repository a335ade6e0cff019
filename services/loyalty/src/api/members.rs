//! Members: EnrolMember, GetMember, GetMemberByCustomer, ListMembers, SuspendMember,
//! ReactivateMember, CloseMember, ListPointLots, GetExpiringPoints and the data-subject export
//! (ExportCustomerData). Each handler parses its request (below the handlers), calls one use
//! case in `workflow::members`, `workflow::status` or `workflow::export` and converts the
//! answer (`wire::members`).

use custops_common::error::{ServiceError, Violations};
use custops_common::paging::page_size;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::parse::{
    check_optional_slug, from_timestamp, member_ref, parse_uuid, request_id, request_key,
};
use super::{LoyaltyApi, Rpc, ok};
use crate::domain::Keyed;
use crate::domain::member::{EnrolCommand, MemberRef};
use crate::store::lots::LotState;
use crate::store::members::MemberFilter;
use crate::wire;
use crate::workflow::status::{self, Change};
use crate::workflow::{export, members};

#[tracing::instrument(skip_all)]
pub(super) async fn enrol_member(
    api: &LoyaltyApi,
    request: Request<pb::EnrolMemberRequest>,
) -> Rpc<pb::EnrolMemberResponse> {
    let key = request_key(&request, "EnrolMember", &request.get_ref().request_id);
    let cmd = Keyed::<EnrolCommand>::try_from(request.into_inner())?;
    let reply = members::enrol_member(&api.ctx, &key, cmd.command, |member| {
        pb::EnrolMemberResponse {
            member: Some(member.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_member(
    api: &LoyaltyApi,
    request: Request<pb::GetMemberRequest>,
) -> Rpc<pb::GetMemberResponse> {
    let req = request.into_inner();
    let id =
        parse_uuid(&req.member_id).map_err(|d| ServiceError::invalid_argument("member_id", d))?;
    let full = full_view(req.view, true)?;
    let member = members::view(&api.ctx, MemberRef::Id(id), full).await?;
    ok(pb::GetMemberResponse {
        member: Some(member.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_member_by_customer(
    api: &LoyaltyApi,
    request: Request<pb::GetMemberByCustomerRequest>,
) -> Rpc<pb::GetMemberByCustomerResponse> {
    let req = request.into_inner();
    let member = member_ref(
        "member",
        Some(pb::MemberRef {
            key: Some(pb::member_ref::Key::ProgramCustomer(pb::ProgramCustomer {
                program_id: req.program_id,
                customer_id: req.customer_id,
            })),
        }),
    )
    .map_err(|e| match e {
        ServiceError::InvalidArgument(mut v) => {
            for violation in &mut v {
                violation.field = violation.field.replace("member.program_customer.", "");
            }
            ServiceError::InvalidArgument(v)
        }
        other => other,
    })?;
    let full = full_view(req.view, true)?;
    let member = members::view(&api.ctx, member, full).await?;
    ok(pb::GetMemberByCustomerResponse {
        member: Some(member.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_members(
    api: &LoyaltyApi,
    request: Request<pb::ListMembersRequest>,
) -> Rpc<pb::ListMembersResponse> {
    let req = request.into_inner();
    let page = api.page_tokens.page::<_, Uuid>(&req);
    let mut v = Violations::new();
    v.take(
        "page_size",
        page_size(req.page_size).map_err(|e| e.message()),
    );
    let program_id = (!req.program_id.is_empty())
        .then(|| v.take("program_id", parse_uuid(&req.program_id)))
        .flatten();
    let customer_id = (!req.customer_id.is_empty())
        .then(|| v.take("customer_id", parse_uuid(&req.customer_id)))
        .flatten();
    let mut statuses = Vec::new();
    for s in &req.statuses {
        match pb::MemberStatus::try_from(*s) {
            Ok(pb::MemberStatus::Unspecified) | Err(_) => v.add("statuses", "a MemberStatus"),
            Ok(s) => statuses.push(s as i16),
        }
    }
    if !req.tier_codes.is_empty() && req.program_id.is_empty() {
        v.add("tier_codes", "requires program_id");
    }
    let range = req.enrol_time_range.unwrap_or_default();
    let from = range
        .start_time
        .as_ref()
        .and_then(|t| v.take("enrol_time_range.start_time", from_timestamp(t)));
    let until = range
        .end_time
        .as_ref()
        .and_then(|t| v.take("enrol_time_range.end_time", from_timestamp(t)));
    let full = v.take(
        "view",
        full_view(req.view, false).map_err(|e| e.to_string()),
    );
    v.into_result()?;
    let (page, full) = (page?, full.unwrap_or(false));
    let filter = MemberFilter {
        program_id,
        customer_id,
        statuses,
        tier_codes: req.tier_codes,
        from,
        until,
    };
    let (rows, next_page_token) =
        members::list(&api.ctx, &filter, full, page.after, page.fetch(), |rows| {
            page.finish(rows, |m| m.member_id)
        })
        .await?;
    ok(pb::ListMembersResponse {
        members: rows.into_iter().map(Into::into).collect(),
        next_page_token: next_page_token?,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn suspend_member(
    api: &LoyaltyApi,
    request: Request<pb::SuspendMemberRequest>,
) -> Rpc<pb::SuspendMemberResponse> {
    let req = request.into_inner();
    let changed = change_status(
        api,
        req.member,
        Change::Suspend,
        req.reason,
        req.operator_id,
        true,
    )
    .await?;
    ok(pb::SuspendMemberResponse {
        member: Some(changed.member.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn reactivate_member(
    api: &LoyaltyApi,
    request: Request<pb::ReactivateMemberRequest>,
) -> Rpc<pb::ReactivateMemberResponse> {
    let req = request.into_inner();
    let changed = change_status(
        api,
        req.member,
        Change::Reactivate,
        req.reason,
        req.operator_id,
        false,
    )
    .await?;
    ok(pb::ReactivateMemberResponse {
        member: Some(changed.member.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn close_member(
    api: &LoyaltyApi,
    request: Request<pb::CloseMemberRequest>,
) -> Rpc<pb::CloseMemberResponse> {
    let req = request.into_inner();
    let changed = change_status(
        api,
        req.member,
        Change::Close,
        req.reason,
        req.operator_id,
        true,
    )
    .await?;
    ok(pb::CloseMemberResponse {
        member: Some(changed.member.into()),
        forfeit_entry: changed.forfeit.map(Into::into),
    })
}

/// A status change's fields parsed (every bad one named), then the change applied.
async fn change_status(
    api: &LoyaltyApi,
    member: Option<pb::MemberRef>,
    change: Change,
    reason: String,
    operator_id: String,
    reason_required: bool,
) -> Result<status::Changed, tonic::Status> {
    let mut v = Violations::new();
    let member = v.take(
        "member",
        member_ref("member", member).map_err(|e| e.to_string()),
    );
    let n = reason.chars().count();
    if (reason_required && n == 0) || n > 500 {
        v.add(
            "reason",
            if reason_required {
                "1-500 characters"
            } else {
                "at most 500 characters"
            },
        );
    }
    v.check(
        operator_id.chars().count() <= 128,
        "operator_id",
        "at most 128 characters",
    );
    v.into_result()?;
    let Some(member) = member else {
        return Err(ServiceError::invalid_argument("member", "required").into());
    };
    Ok(status::change_status(&api.ctx, &member, change, &reason, &operator_id).await?)
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_point_lots(
    api: &LoyaltyApi,
    request: Request<pb::ListPointLotsRequest>,
) -> Rpc<pb::ListPointLotsResponse> {
    let req = request.into_inner();
    let member = member_ref("member", req.member.clone())?;
    let page = api.page_tokens.page::<_, Uuid>(&req)?;
    let mut states = Vec::new();
    for s in &req.states {
        match pb::PointLotState::try_from(*s) {
            Ok(pb::PointLotState::Available) => states.push(LotState::Available),
            Ok(pb::PointLotState::Exhausted) => states.push(LotState::Exhausted),
            Ok(pb::PointLotState::Expired) => states.push(LotState::Expired),
            Ok(pb::PointLotState::Pending) => states.push(LotState::Pending),
            _ => {
                return Err(ServiceError::invalid_argument("states", "a PointLotState").into());
            }
        }
    }
    if req.states.is_empty() {
        states.extend([LotState::Pending, LotState::Available]);
    }
    let mut rows = members::lots(&api.ctx, &member, &states, page.after, page.fetch()).await?;
    let next_page_token = page.finish(&mut rows, |l| l.point_lot_id)?;
    ok(pb::ListPointLotsResponse {
        point_lots: rows.into_iter().map(wire::members::lot_pb).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_expiring_points(
    api: &LoyaltyApi,
    request: Request<pb::GetExpiringPointsRequest>,
) -> Rpc<pb::GetExpiringPointsResponse> {
    let req = request.into_inner();
    let member = member_ref("member", req.member)?;
    let days = match req.within_days {
        0 => 90,
        d @ 1..=366 => d.unsigned_abs(),
        _ => return Err(ServiceError::invalid_argument("within_days", "must be 0-366").into()),
    };
    let expiring = members::expiring(&api.ctx, &member, days).await?;
    ok(pb::GetExpiringPointsResponse {
        total_points: expiring
            .days
            .iter()
            .fold(0_i64, |t, (_, p)| t.saturating_add(*p)),
        days: expiring
            .days
            .into_iter()
            .map(|(d, p)| wire::members::expiring_day_pb(d, p))
            .collect(),
        horizon_end_time: Some(wire::timestamp(expiring.until)),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn export_customer_data(
    api: &LoyaltyApi,
    request: Request<pb::ExportCustomerDataRequest>,
) -> Rpc<pb::ExportCustomerDataResponse> {
    let customer_id = parse_uuid(&request.get_ref().customer_id)
        .map_err(|d| ServiceError::invalid_argument("customer_id", d))?;
    let data = export::customer_data(&api.ctx, customer_id).await?;
    ok(pb::ExportCustomerDataResponse {
        customer_data_export: Some(data.into()),
    })
}

/// EnrolMember: the request id and the enrolment.
impl TryFrom<pb::EnrolMemberRequest> for Keyed<EnrolCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::EnrolMemberRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let program_id = v.take("program_id", parse_uuid(&req.program_id));
        let customer_id = v.take("customer_id", parse_uuid(&req.customer_id));
        check_optional_slug(&mut v, "enrol_channel", &req.enrol_channel, 64);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: EnrolCommand {
                program_id: program_id.unwrap_or_default(),
                customer_id: customer_id.unwrap_or_default(),
                enrol_channel: req.enrol_channel,
            },
        })
    }
}

/// Whether a read asks for the FULL view (`default_full` when unspecified).
fn full_view(view: i32, default_full: bool) -> Result<bool, ServiceError> {
    match pb::MemberView::try_from(view) {
        Ok(pb::MemberView::Unspecified) => Ok(default_full),
        Ok(pb::MemberView::Basic) => Ok(false),
        Ok(pb::MemberView::Full) => Ok(true),
        Err(_) => Err(ServiceError::invalid_argument("view", "BASIC or FULL")),
    }
}
