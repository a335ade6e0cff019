//! The `custops.segmentation.v1.SegmentationService` API (transport only): each RPC is handled
//! in the submodule for its area, which parses the request (`parse`), calls one use case in
//! `workflow` and converts the result. `error` is the one mapping of the service's error to
//! `Status`; nothing else here builds one.
//!
//! - `catalog`: ListFields.
//! - `segments`: segment CRUD, versions, preview, static uploads.
//! - `lookups`: the hot-path membership lookups and ExplainMembership.
//! - `facts`: GetCustomerFacts.
//! - `export`: ExportCustomerData (the data-subject export).
//! - `rfm`, `lifecycle`: configs, per-customer values and distributions.
//! - `predictions`: the prediction config, fit requests, models and a customer's predictions.
//! - `jobs`: recompute jobs and evaluation settings.
//! - `parse`: ids, request ids, cursors, and segment requests into `workflow` commands.

mod catalog;
mod computed;
mod error;
mod export;
mod facts;
mod jobs;
mod lifecycle;
mod lookups;
mod parse;
mod predictions;
mod rfm;
mod segments;

use std::sync::Arc;

use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::segmentation_service_server::{
    SegmentationService, SegmentationServiceServer,
};
use custops_contracts::custops::segmentation::v1::{
    BatchCheckMembershipRequest, BatchCheckMembershipResponse, BatchGetSegmentsRequest,
    BatchGetSegmentsResponse, CheckMembershipRequest, CheckMembershipResponse,
    CreateSegmentRequest, CreateSegmentResponse, DeleteSegmentRequest, DeleteSegmentResponse,
    ExplainMembershipRequest, ExplainMembershipResponse, ExportCustomerDataRequest,
    ExportCustomerDataResponse, FitPredictionModelRequest, FitPredictionModelResponse,
    GetCustomerFactsRequest, GetCustomerFactsResponse, GetCustomerLifecycleRequest,
    GetCustomerLifecycleResponse, GetCustomerPredictionRequest, GetCustomerPredictionResponse,
    GetCustomerRfmRequest, GetCustomerRfmResponse, GetEvaluationSettingsRequest,
    GetEvaluationSettingsResponse, GetLifecycleConfigRequest, GetLifecycleConfigResponse,
    GetLifecycleDistributionRequest, GetLifecycleDistributionResponse, GetPredictionConfigRequest,
    GetPredictionConfigResponse, GetPredictionDistributionRequest,
    GetPredictionDistributionResponse, GetPredictionModelRequest, GetPredictionModelResponse,
    GetRecomputeJobRequest, GetRecomputeJobResponse, GetRfmConfigRequest, GetRfmConfigResponse,
    GetRfmDistributionRequest, GetRfmDistributionResponse, GetSegmentRequest, GetSegmentResponse,
    GetSegmentSizeRequest, GetSegmentSizeResponse, ListCustomerSegmentsRequest,
    ListCustomerSegmentsResponse, ListFieldsRequest, ListFieldsResponse, ListRecomputeJobsRequest,
    ListRecomputeJobsResponse, ListSegmentVersionsRequest, ListSegmentVersionsResponse,
    ListSegmentsRequest, ListSegmentsResponse, PreviewSegmentRequest, PreviewSegmentResponse,
    RecomputeAllRequest, RecomputeAllResponse, RecomputeSegmentRequest, RecomputeSegmentResponse,
    StreamSegmentMembersRequest, UpdateEvaluationSettingsRequest, UpdateEvaluationSettingsResponse,
    UpdateLifecycleConfigRequest, UpdateLifecycleConfigResponse, UpdatePredictionConfigRequest,
    UpdatePredictionConfigResponse, UpdateRfmConfigRequest, UpdateRfmConfigResponse,
    UpdateSegmentRequest, UpdateSegmentResponse, UploadStaticMembersRequest,
    UploadStaticMembersResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::state::AppState;

/// The gRPC handlers of the segmentation service.
#[derive(Debug, Clone)]
pub struct SegmentationApi {
    state: Arc<AppState>,
}

impl SegmentationApi {
    /// Handlers over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// What every handler shares.
    pub(crate) fn state(&self) -> &AppState {
        &self.state
    }
}

#[tonic::async_trait]
impl SegmentationService for SegmentationApi {
    async fn list_fields(
        &self,
        request: Request<ListFieldsRequest>,
    ) -> Result<Response<ListFieldsResponse>, Status> {
        catalog::list_fields(self, request).await
    }

    async fn create_segment(
        &self,
        request: Request<CreateSegmentRequest>,
    ) -> Result<Response<CreateSegmentResponse>, Status> {
        segments::create_segment(self, request).await
    }

    async fn get_segment(
        &self,
        request: Request<GetSegmentRequest>,
    ) -> Result<Response<GetSegmentResponse>, Status> {
        segments::get_segment(self, request).await
    }

    async fn batch_get_segments(
        &self,
        request: Request<BatchGetSegmentsRequest>,
    ) -> Result<Response<BatchGetSegmentsResponse>, Status> {
        segments::batch_get_segments(self, request).await
    }

    async fn list_segments(
        &self,
        request: Request<ListSegmentsRequest>,
    ) -> Result<Response<ListSegmentsResponse>, Status> {
        segments::list_segments(self, request).await
    }

    async fn update_segment(
        &self,
        request: Request<UpdateSegmentRequest>,
    ) -> Result<Response<UpdateSegmentResponse>, Status> {
        segments::update_segment(self, request).await
    }

    async fn delete_segment(
        &self,
        request: Request<DeleteSegmentRequest>,
    ) -> Result<Response<DeleteSegmentResponse>, Status> {
        segments::delete_segment(self, request).await
    }

    async fn list_segment_versions(
        &self,
        request: Request<ListSegmentVersionsRequest>,
    ) -> Result<Response<ListSegmentVersionsResponse>, Status> {
        segments::list_segment_versions(self, request).await
    }

    async fn preview_segment(
        &self,
        request: Request<PreviewSegmentRequest>,
    ) -> Result<Response<PreviewSegmentResponse>, Status> {
        segments::preview_segment(self, request).await
    }

    async fn upload_static_members(
        &self,
        request: Request<Streaming<UploadStaticMembersRequest>>,
    ) -> Result<Response<UploadStaticMembersResponse>, Status> {
        segments::upload_static_members(self, request).await
    }

    async fn list_customer_segments(
        &self,
        request: Request<ListCustomerSegmentsRequest>,
    ) -> Result<Response<ListCustomerSegmentsResponse>, Status> {
        lookups::list_customer_segments(self, request).await
    }

    async fn check_membership(
        &self,
        request: Request<CheckMembershipRequest>,
    ) -> Result<Response<CheckMembershipResponse>, Status> {
        lookups::check_membership(self, request).await
    }

    async fn batch_check_membership(
        &self,
        request: Request<BatchCheckMembershipRequest>,
    ) -> Result<Response<BatchCheckMembershipResponse>, Status> {
        lookups::batch_check_membership(self, request).await
    }

    async fn stream_segment_members(
        &self,
        request: Request<StreamSegmentMembersRequest>,
    ) -> Result<Response<lookups::MemberStream>, Status> {
        lookups::stream_segment_members(self, request).await
    }

    async fn get_segment_size(
        &self,
        request: Request<GetSegmentSizeRequest>,
    ) -> Result<Response<GetSegmentSizeResponse>, Status> {
        lookups::get_segment_size(self, request).await
    }

    async fn get_customer_facts(
        &self,
        request: Request<GetCustomerFactsRequest>,
    ) -> Result<Response<GetCustomerFactsResponse>, Status> {
        facts::get_customer_facts(self, request).await
    }

    async fn explain_membership(
        &self,
        request: Request<ExplainMembershipRequest>,
    ) -> Result<Response<ExplainMembershipResponse>, Status> {
        lookups::explain_membership(self, request).await
    }

    async fn get_prediction_config(
        &self,
        request: Request<GetPredictionConfigRequest>,
    ) -> Result<Response<GetPredictionConfigResponse>, Status> {
        predictions::get_prediction_config(self, request).await
    }

    async fn update_prediction_config(
        &self,
        request: Request<UpdatePredictionConfigRequest>,
    ) -> Result<Response<UpdatePredictionConfigResponse>, Status> {
        predictions::update_prediction_config(self, request).await
    }

    async fn fit_prediction_model(
        &self,
        request: Request<FitPredictionModelRequest>,
    ) -> Result<Response<FitPredictionModelResponse>, Status> {
        predictions::fit_prediction_model(self, request).await
    }

    async fn get_prediction_model(
        &self,
        request: Request<GetPredictionModelRequest>,
    ) -> Result<Response<GetPredictionModelResponse>, Status> {
        predictions::get_prediction_model(self, request).await
    }

    async fn get_prediction_distribution(
        &self,
        request: Request<GetPredictionDistributionRequest>,
    ) -> Result<Response<GetPredictionDistributionResponse>, Status> {
        predictions::get_prediction_distribution(self, request).await
    }

    async fn get_customer_prediction(
        &self,
        request: Request<GetCustomerPredictionRequest>,
    ) -> Result<Response<GetCustomerPredictionResponse>, Status> {
        predictions::get_customer_prediction(self, request).await
    }

    async fn get_rfm_config(
        &self,
        request: Request<GetRfmConfigRequest>,
    ) -> Result<Response<GetRfmConfigResponse>, Status> {
        rfm::get_rfm_config(self, request).await
    }

    async fn update_rfm_config(
        &self,
        request: Request<UpdateRfmConfigRequest>,
    ) -> Result<Response<UpdateRfmConfigResponse>, Status> {
        rfm::update_rfm_config(self, request).await
    }

    async fn get_customer_rfm(
        &self,
        request: Request<GetCustomerRfmRequest>,
    ) -> Result<Response<GetCustomerRfmResponse>, Status> {
        rfm::get_customer_rfm(self, request).await
    }

    async fn get_rfm_distribution(
        &self,
        request: Request<GetRfmDistributionRequest>,
    ) -> Result<Response<GetRfmDistributionResponse>, Status> {
        rfm::get_rfm_distribution(self, request).await
    }

    async fn get_lifecycle_config(
        &self,
        request: Request<GetLifecycleConfigRequest>,
    ) -> Result<Response<GetLifecycleConfigResponse>, Status> {
        lifecycle::get_lifecycle_config(self, request).await
    }

    async fn update_lifecycle_config(
        &self,
        request: Request<UpdateLifecycleConfigRequest>,
    ) -> Result<Response<UpdateLifecycleConfigResponse>, Status> {
        lifecycle::update_lifecycle_config(self, request).await
    }

    async fn get_customer_lifecycle(
        &self,
        request: Request<GetCustomerLifecycleRequest>,
    ) -> Result<Response<GetCustomerLifecycleResponse>, Status> {
        lifecycle::get_customer_lifecycle(self, request).await
    }

    async fn get_lifecycle_distribution(
        &self,
        request: Request<GetLifecycleDistributionRequest>,
    ) -> Result<Response<GetLifecycleDistributionResponse>, Status> {
        lifecycle::get_lifecycle_distribution(self, request).await
    }

    async fn recompute_segment(
        &self,
        request: Request<RecomputeSegmentRequest>,
    ) -> Result<Response<RecomputeSegmentResponse>, Status> {
        jobs::recompute_segment(self, request).await
    }

    async fn recompute_all(
        &self,
        request: Request<RecomputeAllRequest>,
    ) -> Result<Response<RecomputeAllResponse>, Status> {
        jobs::recompute_all(self, request).await
    }

    async fn get_recompute_job(
        &self,
        request: Request<GetRecomputeJobRequest>,
    ) -> Result<Response<GetRecomputeJobResponse>, Status> {
        jobs::get_recompute_job(self, request).await
    }

    async fn list_recompute_jobs(
        &self,
        request: Request<ListRecomputeJobsRequest>,
    ) -> Result<Response<ListRecomputeJobsResponse>, Status> {
        jobs::list_recompute_jobs(self, request).await
    }

    async fn get_evaluation_settings(
        &self,
        request: Request<GetEvaluationSettingsRequest>,
    ) -> Result<Response<GetEvaluationSettingsResponse>, Status> {
        jobs::get_evaluation_settings(self, request).await
    }

    async fn update_evaluation_settings(
        &self,
        request: Request<UpdateEvaluationSettingsRequest>,
    ) -> Result<Response<UpdateEvaluationSettingsResponse>, Status> {
        jobs::update_evaluation_settings(self, request).await
    }

    async fn create_computed_trait(
        &self,
        request: Request<pb::CreateComputedTraitRequest>,
    ) -> Result<Response<pb::CreateComputedTraitResponse>, Status> {
        computed::create_computed_trait(self, request).await
    }

    async fn get_computed_trait(
        &self,
        request: Request<pb::GetComputedTraitRequest>,
    ) -> Result<Response<pb::GetComputedTraitResponse>, Status> {
        computed::get_computed_trait(self, request).await
    }

    async fn list_computed_traits(
        &self,
        request: Request<pb::ListComputedTraitsRequest>,
    ) -> Result<Response<pb::ListComputedTraitsResponse>, Status> {
        computed::list_computed_traits(self, request).await
    }

    async fn update_computed_trait(
        &self,
        request: Request<pb::UpdateComputedTraitRequest>,
    ) -> Result<Response<pb::UpdateComputedTraitResponse>, Status> {
        computed::update_computed_trait(self, request).await
    }

    async fn delete_computed_trait(
        &self,
        request: Request<pb::DeleteComputedTraitRequest>,
    ) -> Result<Response<pb::DeleteComputedTraitResponse>, Status> {
        computed::delete_computed_trait(self, request).await
    }

    async fn get_customer_computed_traits(
        &self,
        request: Request<pb::GetCustomerComputedTraitsRequest>,
    ) -> Result<Response<pb::GetCustomerComputedTraitsResponse>, Status> {
        computed::get_customer_computed_traits(self, request).await
    }

    async fn export_customer_data(
        &self,
        request: Request<ExportCustomerDataRequest>,
    ) -> Result<Response<ExportCustomerDataResponse>, Status> {
        export::export_customer_data(self, request).await
    }
}

/// The API wrapped for serving, with explicit message size limits.
pub fn server(api: SegmentationApi) -> SegmentationServiceServer<SegmentationApi> {
    SegmentationServiceServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
