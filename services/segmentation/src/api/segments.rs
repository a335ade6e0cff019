//! Segment CRUD, versions, preview and static uploads (transport only): `parse` turns each
//! request into a command, `workflow::segments` runs it in one transaction, and the result
//! goes back as is or through `wire::segments`.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use custops_common::auth::Caller;
use custops_contracts::custops::segmentation::v1::{
    BatchGetSegmentsRequest, BatchGetSegmentsResponse, CreateSegmentRequest, CreateSegmentResponse,
    DeleteSegmentRequest, DeleteSegmentResponse, GetSegmentRequest, GetSegmentResponse,
    ListSegmentVersionsRequest, ListSegmentVersionsResponse, ListSegmentsRequest,
    ListSegmentsResponse, PreviewSegmentRequest, PreviewSegmentResponse, UpdateSegmentRequest,
    UpdateSegmentResponse, UploadStaticMembersRequest, UploadStaticMembersResponse,
};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::SegmentationApi;
use super::parse::{self, full_view, parse_id};
use crate::error::Error;
use crate::store::segments::SegmentRecord;
use crate::wire::segments::{segment_to_proto, version_to_proto};
use crate::workflow::segments as workflow;

/// Previews scan the whole customer base: at most this many run at once per replica.
const MAX_CONCURRENT_PREVIEWS: usize = 4;

static PREVIEWS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_PREVIEWS);

/// CreateSegment.
pub(super) async fn create_segment(
    api: &SegmentationApi,
    request: Request<CreateSegmentRequest>,
) -> Result<Response<CreateSegmentResponse>, Status> {
    let caller = Caller::service_of(&request);
    let (segment, key, invalid) = parse::new_segment(&caller, request.get_ref())?;
    let created = workflow::create(api.state(), &caller, key, segment, invalid).await?;
    Ok(Response::new(created))
}

/// GetSegment.
pub(super) async fn get_segment(
    api: &SegmentationApi,
    request: Request<GetSegmentRequest>,
) -> Result<Response<GetSegmentResponse>, Status> {
    let request = request.into_inner();
    let id = parse_id("segment_id", &request.segment_id)?;
    let segment = workflow::get(api.state(), id).await?;
    Ok(Response::new(GetSegmentResponse {
        segment: Some(segment_to_proto(&segment, full_view(request.view, true))),
    }))
}

/// BatchGetSegments.
pub(super) async fn batch_get_segments(
    api: &SegmentationApi,
    request: Request<BatchGetSegmentsRequest>,
) -> Result<Response<BatchGetSegmentsResponse>, Status> {
    let request = request.into_inner();
    let ids = parse::segment_ids(&request.segment_ids)?;
    let found = workflow::get_many(api.state(), &ids).await?;
    let full = full_view(request.view, false);
    Ok(Response::new(batch_response(&ids, &found, full)))
}

/// The found segments in request order (each once) and the ids not found.
fn batch_response(ids: &[Uuid], found: &[SegmentRecord], full: bool) -> BatchGetSegmentsResponse {
    let by_id: HashMap<Uuid, &SegmentRecord> = found.iter().map(|s| (s.segment_id, s)).collect();
    let mut seen = BTreeSet::new();
    let mut segments = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        if !seen.insert(*id) {
            continue;
        }
        match by_id.get(id) {
            Some(s) => segments.push(segment_to_proto(s, full)),
            None => missing.push(id.to_string()),
        }
    }
    BatchGetSegmentsResponse {
        segments,
        missing_segment_ids: missing,
    }
}

/// ListSegments: oldest first, keyset `(create_time, segment_id)`.
pub(super) async fn list_segments(
    api: &SegmentationApi,
    request: Request<ListSegmentsRequest>,
) -> Result<Response<ListSegmentsResponse>, Status> {
    let request = request.into_inner();
    let state = api.state();
    let (page, filter) = parse::both(
        parse::page::<_, (DateTime<Utc>, Uuid)>(&state.page_tokens, &request),
        parse::segment_filter(&request),
    )?;
    let mut rows = workflow::list(state, &filter, page.after, page.limit()).await?;
    let next_page_token = page
        .finish(&mut rows, |s| (s.create_time, s.segment_id))
        .map_err(Error::internal)?;
    let full = full_view(request.view, false);
    Ok(Response::new(ListSegmentsResponse {
        segments: rows.iter().map(|s| segment_to_proto(s, full)).collect(),
        next_page_token,
    }))
}

/// UpdateSegment.
pub(super) async fn update_segment(
    api: &SegmentationApi,
    request: Request<UpdateSegmentRequest>,
) -> Result<Response<UpdateSegmentResponse>, Status> {
    let caller = Caller::service_of(&request);
    let change = parse::segment_change(request.into_inner())?;
    let updated = workflow::update(api.state(), &caller, change).await?;
    Ok(Response::new(updated))
}

/// DeleteSegment.
pub(super) async fn delete_segment(
    api: &SegmentationApi,
    request: Request<DeleteSegmentRequest>,
) -> Result<Response<DeleteSegmentResponse>, Status> {
    let request = request.into_inner();
    let id = parse_id("segment_id", &request.segment_id)?;
    workflow::delete(api.state(), id, &request.etag).await?;
    Ok(Response::new(DeleteSegmentResponse {}))
}

/// ListSegmentVersions: newest first, keyset `version`.
pub(super) async fn list_segment_versions(
    api: &SegmentationApi,
    request: Request<ListSegmentVersionsRequest>,
) -> Result<Response<ListSegmentVersionsResponse>, Status> {
    let request = request.into_inner();
    let state = api.state();
    let (id, page) = parse::both(
        parse_id("segment_id", &request.segment_id),
        parse::page::<_, i64>(&state.page_tokens, &request),
    )?;
    let mut rows = workflow::versions(state, id, page.after, page.limit()).await?;
    let next_page_token = page
        .finish(&mut rows, |v| v.version)
        .map_err(Error::internal)?;
    Ok(Response::new(ListSegmentVersionsResponse {
        versions: rows.iter().map(version_to_proto).collect(),
        next_page_token,
    }))
}

/// PreviewSegment.
pub(super) async fn preview_segment(
    api: &SegmentationApi,
    request: Request<PreviewSegmentRequest>,
) -> Result<Response<PreviewSegmentResponse>, Status> {
    let request = request.into_inner();
    let Ok(_permit) = PREVIEWS.try_acquire() else {
        return Err(Error::TooManyPreviews.into());
    };
    let (preview, invalid) = parse::preview_request(request);
    Ok(Response::new(
        workflow::preview(api.state(), preview, invalid).await?,
    ))
}

/// UploadStaticMembers.
pub(super) async fn upload_static_members(
    api: &SegmentationApi,
    request: Request<Streaming<UploadStaticMembersRequest>>,
) -> Result<Response<UploadStaticMembersResponse>, Status> {
    let caller = Caller::service_of(&request);
    let (upload, key) = parse::upload(&caller, request.into_inner()).await?;
    let uploaded = workflow::upload(api.state(), key, upload).await?;
    Ok(Response::new(uploaded))
}
