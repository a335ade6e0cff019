//! The ledger: EarnPoints, RedeemPoints, AdjustPoints, ReversePoints, GetLedgerEntry,
//! ListLedgerEntries, CalculatePurchasePoints. Each handler parses its request (the commands'
//! `TryFrom`s below the handlers), calls one use case in `workflow::ledger` or
//! `workflow::reversals` and converts the answer (`wire::ledger`).

use custops_common::error::{ServiceError, Violations};
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::parse::{
    check_len, check_range, entry_context, from_timestamp, member_ref, parse_member, parse_uuid,
    request_id, request_key,
};
use super::{LoyaltyApi, Rpc, ok};
use crate::domain::Keyed;
use crate::domain::earning::{Purchase, PurchaseLine};
use crate::domain::ledger::{
    AdjustCommand, EarnCommand, EarnSource, EntryKind, RedeemCommand, ReverseAmount,
    ReverseCommand, ReverseTarget, parse_request_id,
};
use crate::domain::limits::{MAX_AMOUNT_MINOR, MAX_ENTRY_POINTS, MAX_REQUEST_POINTS};
use crate::domain::money::Currency;
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
        t.map(|t| from_timestamp(t).map_err(|d| ServiceError::invalid_argument(field, d)))
            .transpose()
    };
    let statement = StatementFilter {
        kinds: entry_kinds(&filter.kinds)?,
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

fn purchase(v: &mut Violations, p: pb::Purchase, order_required: bool) -> Purchase {
    if order_required || !p.order_id.is_empty() {
        if p.order_id.is_empty() {
            v.add("purchase.order_id", "required");
        } else if p.order_id.len() > 128 || !p.order_id.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            v.add(
                "purchase.order_id",
                "must be 1-128 printable ASCII characters",
            );
        }
    }
    let amount = p.amount.unwrap_or_else(|| {
        v.add("purchase.amount", "required");
        common::Money::default()
    });
    check_range(
        v,
        "purchase.amount.amount_minor",
        amount.amount_minor,
        1,
        MAX_AMOUNT_MINOR,
    );
    let _ = v.take(
        "purchase.amount.currency",
        Currency::parse(&amount.currency),
    );
    if p.categories.len() > 50 {
        v.add("purchase.categories", "at most 50");
    }
    if p.lines.len() > 500 {
        v.add("purchase.lines", "at most 500");
    }
    let mut lines = Vec::new();
    for (i, line) in p.lines.into_iter().enumerate() {
        let a = line.amount.unwrap_or_default();
        check_range(
            v,
            &format!("purchase.lines[{i}].amount.amount_minor"),
            a.amount_minor,
            0,
            MAX_AMOUNT_MINOR,
        );
        if a.currency != amount.currency {
            v.add(
                format!("purchase.lines[{i}].amount.currency"),
                "must be the purchase currency",
            );
        }
        lines.push(PurchaseLine {
            amount_minor: a.amount_minor,
            category: line.category,
        });
    }
    // Summed in i128: the lines are checked above, but all of them are summed either way.
    let lines_total: i128 = lines.iter().map(|l| i128::from(l.amount_minor)).sum();
    if !lines.is_empty() && lines_total != i128::from(amount.amount_minor) {
        v.add("purchase.amount", "must equal the sum of the lines");
    }
    let purchase_time = p
        .purchase_time
        .as_ref()
        .and_then(|t| v.take("purchase.purchase_time", from_timestamp(t)));
    Purchase {
        order_id: p.order_id,
        amount_minor: amount.amount_minor,
        currency: amount.currency,
        categories: p.categories,
        channel: p.channel,
        lines,
        purchase_time,
    }
}

impl TryFrom<pb::EarnPointsRequest> for Keyed<EarnCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::EarnPointsRequest) -> Result<Self, ServiceError> {
        use pb::earn_points_request::Source;
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = parse_member(&mut v, "member", req.member);
        let source = match req.source {
            None => {
                v.add("source", "required: a purchase or a grant");
                EarnSource::Grant {
                    points: 0,
                    qualifying: false,
                    expire_time: None,
                }
            }
            Some(Source::Purchase(p)) => EarnSource::Purchase(purchase(&mut v, p, true)),
            Some(Source::Grant(g)) => {
                check_range(&mut v, "grant.points", g.points, 1, MAX_REQUEST_POINTS);
                if req.reason.is_empty() {
                    v.add("reason", "required for a grant");
                }
                let expire_time = g
                    .expire_time
                    .as_ref()
                    .and_then(|t| v.take("grant.expire_time", from_timestamp(t)));
                EarnSource::Grant {
                    points: g.points,
                    qualifying: g.qualifying,
                    expire_time,
                }
            }
        };
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: EarnCommand {
                member,
                source,
                context,
            },
        })
    }
}

impl TryFrom<pb::RedeemPointsRequest> for Keyed<RedeemCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::RedeemPointsRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = parse_member(&mut v, "member", req.member);
        check_range(&mut v, "points", req.points, 1, MAX_REQUEST_POINTS);
        check_len(
            &mut v,
            "external_reference",
            &req.external_reference,
            0,
            128,
        );
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: RedeemCommand {
                member,
                points: req.points,
                context,
                external_reference: req.external_reference,
            },
        })
    }
}

impl TryFrom<pb::AdjustPointsRequest> for Keyed<AdjustCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::AdjustPointsRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = parse_member(&mut v, "member", req.member);
        let max = MAX_REQUEST_POINTS;
        check_range(&mut v, "points", req.points, -max, max);
        check_range(
            &mut v,
            "qualifying_points",
            req.qualifying_points,
            -max,
            max,
        );
        if req.points == 0 && req.qualifying_points == 0 {
            v.add("points", "points and qualifying_points cannot both be 0");
        }
        check_len(&mut v, "reason", &req.reason, 1, 500);
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: AdjustCommand {
                member,
                points: req.points,
                qualifying_points: req.qualifying_points,
                context,
            },
        })
    }
}

impl TryFrom<pb::ReversePointsRequest> for Keyed<ReverseCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::ReversePointsRequest) -> Result<Self, ServiceError> {
        use pb::reverse_points_request::{Amount, Target};
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let target = match req.target {
            None => {
                v.add(
                    "target",
                    "required: ledger_entry_id, original_request_id or order",
                );
                ReverseTarget::Entry(Uuid::nil())
            }
            Some(Target::LedgerEntryId(id)) => ReverseTarget::Entry(
                v.take("ledger_entry_id", parse_uuid(&id))
                    .unwrap_or_default(),
            ),
            Some(Target::OriginalRequestId(id)) => ReverseTarget::OriginalRequest(
                v.take("original_request_id", parse_request_id(&id))
                    .unwrap_or_default(),
            ),
            Some(Target::Order(o)) => {
                let program_id = v.take("order.program_id", parse_uuid(&o.program_id));
                if o.order_id.is_empty() {
                    v.add("order.order_id", "required");
                }
                ReverseTarget::Order {
                    program_id: program_id.unwrap_or_default(),
                    order_id: o.order_id,
                }
            }
        };
        let amount = match req.amount {
            None => {
                v.add("amount", "required: all_remaining, points or refund_amount");
                ReverseAmount::AllRemaining
            }
            Some(Amount::AllRemaining(all)) => {
                v.check(all, "all_remaining", "must be true when set");
                ReverseAmount::AllRemaining
            }
            Some(Amount::Points(points)) => {
                // No entry holds more points than an earn may credit.
                check_range(&mut v, "points", points, 1, MAX_ENTRY_POINTS);
                ReverseAmount::Points(points)
            }
            Some(Amount::RefundAmount(m)) => {
                check_range(
                    &mut v,
                    "refund_amount.amount_minor",
                    m.amount_minor,
                    1,
                    MAX_AMOUNT_MINOR,
                );
                let _ = v.take("refund_amount.currency", Currency::parse(&m.currency));
                ReverseAmount::Refund {
                    amount_minor: m.amount_minor,
                    currency: m.currency,
                }
            }
        };
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: ReverseCommand {
                target,
                amount,
                context,
            },
        })
    }
}

/// Entry kinds of a statement filter.
fn entry_kinds(kinds: &[i32]) -> Result<Vec<EntryKind>, ServiceError> {
    kinds
        .iter()
        .map(|k| {
            i16::try_from(*k)
                .ok()
                .and_then(EntryKind::from_code)
                .ok_or_else(|| {
                    ServiceError::invalid_argument(
                        "filter.kinds",
                        format!("{k} is not a supported entry kind"),
                    )
                })
        })
        .collect()
}
