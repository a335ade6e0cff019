//! The hot-path lookups (served through `crate::lookups`' two-level cache) and
//! ExplainMembership. An unknown customer has no segments (empty / false, not NOT_FOUND); a
//! missing segment is NOT_FOUND.

use std::collections::BTreeSet;

use custops_common::error::Violations;
use custops_contracts::custops::segmentation::v1::{
    BatchCheckMembershipRequest, BatchCheckMembershipResponse, CheckMembershipRequest,
    CheckMembershipResponse, CustomerSegmentsView, ExplainMembershipRequest,
    ExplainMembershipResponse, GetSegmentSizeRequest, GetSegmentSizeResponse,
    ListCustomerSegmentsRequest, ListCustomerSegmentsResponse, StreamSegmentMembersRequest,
    StreamSegmentMembersResponse,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::SegmentationApi;
use super::parse::{check_customer_id, join_invalid, parse_customer_id, parse_id};
use crate::error::{Error, Result};
use crate::wire::rules::explanation_to_proto;
use crate::wire::segments::membership_to_proto;
use crate::wire::timestamp as ts;
use crate::workflow::lookups as workflow;

/// The stream StreamSegmentMembers answers with.
pub(crate) type MemberStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<StreamSegmentMembersResponse, Status>> + Send>,
>;

fn customer(field: &str, value: &str) -> Result<()> {
    check_customer_id(value).map_err(|d| Error::invalid(field, d))
}

/// ListCustomerSegments. IDS (and UNSPECIFIED) are the hot path, through the caches; FULL
/// reads ids, names, kinds and enter times in one Postgres query, so the two lists always
/// agree with each other (the cache may lag a commit by its notification).
pub(super) async fn list_customer_segments(
    api: &SegmentationApi,
    request: Request<ListCustomerSegmentsRequest>,
) -> Result<Response<ListCustomerSegmentsResponse>, Status> {
    let request = request.into_inner();
    let mut violations = Violations::new();
    if let Err(d) = check_customer_id(&request.customer_id) {
        violations.add("customer_id", d);
    }
    violations.check(
        request.segment_ids.len() <= 1_000,
        "segment_ids",
        "at most 1,000 ids",
    );
    let mut only = BTreeSet::new();
    for (i, raw) in request.segment_ids.iter().enumerate() {
        match Uuid::parse_str(raw) {
            Ok(id) => {
                only.insert(id);
            }
            Err(_) => violations.add(format!("segment_ids[{i}]"), "not a valid UUID"),
        }
    }
    let full = violations.take(
        "view",
        match CustomerSegmentsView::try_from(request.view) {
            Ok(CustomerSegmentsView::Full) => Ok(true),
            Ok(CustomerSegmentsView::Unspecified | CustomerSegmentsView::Ids) => Ok(false),
            Err(_) => Err("unknown value; UNSPECIFIED, IDS or FULL".to_owned()),
        },
    );
    Error::check(violations)?;
    let wanted = |id: &Uuid| only.is_empty() || only.contains(id);
    let state = api.state();
    if full == Some(true) {
        let held = workflow::customer_memberships(state, &request.customer_id).await?;
        let held: Vec<_> = held.into_iter().filter(|m| wanted(&m.segment_id)).collect();
        return Ok(Response::new(ListCustomerSegmentsResponse {
            segment_ids: held.iter().map(|m| m.segment_id.to_string()).collect(),
            memberships: held.iter().map(membership_to_proto).collect(),
        }));
    }
    let ids = workflow::customer_segments(state, &request.customer_id).await?;
    Ok(Response::new(ListCustomerSegmentsResponse {
        segment_ids: ids
            .0
            .iter()
            .filter(|id| wanted(id))
            .map(Uuid::to_string)
            .collect(),
        memberships: Vec::new(),
    }))
}

/// CheckMembership.
pub(super) async fn check_membership(
    api: &SegmentationApi,
    request: Request<CheckMembershipRequest>,
) -> Result<Response<CheckMembershipResponse>, Status> {
    let request = request.into_inner();
    let segment_id = parse_id("segment_id", &request.segment_id)?;
    customer("customer_id", &request.customer_id)?;
    let member = workflow::is_member(api.state(), segment_id, &request.customer_id).await?;
    Ok(Response::new(CheckMembershipResponse { member }))
}

/// BatchCheckMembership: the customers this process's cache holds are answered from it, the
/// rest from one indexed query that also fills the cache (cheaper than up to 1,000 Redis round
/// trips), after the segment's existence from the cache.
pub(super) async fn batch_check_membership(
    api: &SegmentationApi,
    request: Request<BatchCheckMembershipRequest>,
) -> Result<Response<BatchCheckMembershipResponse>, Status> {
    let request = request.into_inner();
    let mut violations = Violations::new();
    let segment_id = violations.take(
        "segment_id",
        parse_id("segment_id", &request.segment_id).map_err(|_| "not a valid UUID".to_owned()),
    );
    violations.check(
        (1..=1_000).contains(&request.customer_ids.len()),
        "customer_ids",
        "1-1,000 ids required",
    );
    for (i, id) in request.customer_ids.iter().enumerate() {
        if let Err(d) = check_customer_id(id) {
            violations.add(format!("customer_ids[{i}]"), d);
        }
    }
    Error::check(violations)?;
    let Some(segment_id) = segment_id else {
        return Err(Error::invalid("segment_id", "required").into());
    };
    let is_member = workflow::members_among(api.state(), segment_id, &request.customer_ids).await?;
    Ok(Response::new(BatchCheckMembershipResponse { is_member }))
}

/// StreamSegmentMembers: keyset pages by customer id from Postgres; the segment's existence
/// is checked before every batch, so a deletion mid-stream ends it with NOT_FOUND.
pub(super) async fn stream_segment_members(
    api: &SegmentationApi,
    request: Request<StreamSegmentMembersRequest>,
) -> Result<Response<MemberStream>, Status> {
    let request = request.into_inner();
    let segment_id = parse_id("segment_id", &request.segment_id)?;
    let batch = match request.batch_size {
        0 => 1_000,
        n @ 1..=10_000 => i64::from(n),
        _ => {
            return Err(Error::invalid("batch_size", "must be 0-10,000").into());
        }
    };
    let state = api.state();
    let fingerprint = format!("members:{segment_id}");
    let mut after: String = if request.resume_token.is_empty() {
        String::new()
    } else {
        state
            .page_tokens
            .decode(&fingerprint, &request.resume_token)
            .map_err(|_| {
                Error::invalid("resume_token", "malformed or issued for another segment")
            })?
    };
    workflow::require_segment(&state.pool, segment_id).await?;
    let pool = state.pool.clone();
    let tokens = state.page_tokens.clone();
    let stream = async_stream(move |tx| async move {
        loop {
            let page = workflow::members_page(&pool, segment_id, &after, batch).await?;
            let Some(last) = page.last().cloned() else {
                return Ok(());
            };
            let token = tokens
                .encode(&fingerprint, &last)
                .map_err(Error::internal)?;
            let full = i64::try_from(page.len()).unwrap_or(0) == batch;
            let message = StreamSegmentMembersResponse {
                customer_ids: page,
                resume_token: token,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(());
            }
            if !full {
                return Ok(());
            }
            after = last;
        }
    });
    Ok(Response::new(stream))
}

/// A stream fed by `producer` through a small channel (backpressure: one batch ahead); an
/// error the producer returns is sent as the stream's last item.
fn async_stream<F, Fut>(producer: F) -> MemberStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<StreamSegmentMembersResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let fut = producer(tx.clone());
    custops_common::telemetry::spawn(async move {
        if let Err(status) = fut.await {
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// GetSegmentSize.
pub(super) async fn get_segment_size(
    api: &SegmentationApi,
    request: Request<GetSegmentSizeRequest>,
) -> Result<Response<GetSegmentSizeResponse>, Status> {
    let request = request.into_inner();
    let segment_id = parse_id("segment_id", &request.segment_id)?;
    let member_count = workflow::segment_size(api.state(), segment_id).await?;
    Ok(Response::new(GetSegmentSizeResponse { member_count }))
}

/// ExplainMembership: the stored membership next to the rule evaluated now.
pub(super) async fn explain_membership(
    api: &SegmentationApi,
    request: Request<ExplainMembershipRequest>,
) -> Result<Response<ExplainMembershipResponse>, Status> {
    let request = request.into_inner();
    let (segment_id, customer_id) = match (
        parse_id("segment_id", &request.segment_id),
        parse_customer_id("customer_id", &request.customer_id),
    ) {
        (Ok(segment_id), Ok(customer_id)) => (segment_id, customer_id),
        (segment_id, customer_id) => {
            return Err(join_invalid([segment_id.err(), customer_id.err()]).into());
        }
    };
    let explained = workflow::explain(api.state(), segment_id, &customer_id).await?;
    Ok(Response::new(ExplainMembershipResponse {
        member: explained.member,
        rule_result: explained.rule_result,
        segment_version: explained.segment_version,
        evaluate_time: Some(ts(explained.evaluate_time)),
        enter_time: explained.entered.map(|(time, _)| ts(time)),
        enter_reason: explained
            .entered
            .map(|(_, reason)| reason)
            .unwrap_or_default()
            .into(),
        explanation: explained.explanation.map(explanation_to_proto),
    }))
}
