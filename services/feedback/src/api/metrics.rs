//! GetSurveyMetrics: NPS, CSAT and CES over a filter, in total and per group.

use custops_common::error::Violations;
use custops_contracts::custops::feedback::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::{FeedbackApi, Rpc, ok, parse};
use crate::domain::metrics::{Grouping, MetricsQuery};
use crate::error::Error;
use crate::workflow;

#[tracing::instrument(skip_all)]
pub(super) async fn get_survey_metrics(
    api: &FeedbackApi,
    request: Request<pb::GetSurveyMetricsRequest>,
) -> Rpc<pb::GetSurveyMetricsResponse> {
    let q = metrics_query(request.into_inner())?;
    let groups = workflow::metrics::compute(&api.ctx, &q).await?;
    let mut groups = groups.iter().map(Into::into);
    ok(pb::GetSurveyMetricsResponse {
        total: groups.next(),
        groups: groups.collect(),
        time_zone: q.time_zone,
    })
}

fn metrics_query(req: pb::GetSurveyMetricsRequest) -> Result<MetricsQuery, Error> {
    let mut v = Violations::new();
    let survey_ids = parse::survey_ids(&mut v, &req.survey_ids);
    let (start, end) =
        parse::time_range(&mut v, "submit_time_range", req.submit_time_range.as_ref());
    parse::channels(&mut v, &req.channels);
    if !req.segment_id.is_empty() && Uuid::parse_str(&req.segment_id).is_err() {
        v.add("segment_id", "must be a UUID");
    }
    let touchpoint_kinds = parse::touchpoint_kinds(&mut v, &req.touchpoint_kinds);
    let grouping = match pb::MetricsGrouping::try_from(req.group_by).ok() {
        Some(pb::MetricsGrouping::Unspecified) => Grouping::None,
        Some(pb::MetricsGrouping::Day) => Grouping::Day,
        Some(pb::MetricsGrouping::Week) => Grouping::Week,
        Some(pb::MetricsGrouping::Month) => Grouping::Month,
        Some(pb::MetricsGrouping::Channel) => Grouping::Channel,
        Some(pb::MetricsGrouping::Survey) => Grouping::Survey,
        None => {
            v.add("group_by", "not a grouping");
            Grouping::None
        }
    };
    let time_zone = if req.time_zone.is_empty() {
        "UTC".to_owned()
    } else {
        req.time_zone
    };
    if time_zone.len() > 64 {
        v.add("time_zone", "not an IANA time zone name");
    }
    parse::finish(v, || {
        Some(MetricsQuery {
            survey_ids,
            start,
            end,
            channels: req.channels,
            touchpoint_kinds,
            grouping,
            time_zone,
            segment_id: req.segment_id,
        })
    })
}
