//! Programs: CreateProgram, GetProgram, ListPrograms, UpdateProgram. Each handler parses its
//! request (`convert`), calls one use case in `workflow::programs` and converts the program
//! (`wire::programs`).

use custops_common::error::ServiceError;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::convert::{self, parse_uuid};
use super::parse::request_key;
use super::{LoyaltyApi, Rpc, ok};
use crate::workflow::programs;

#[tracing::instrument(skip_all)]
pub(super) async fn create_program(
    api: &LoyaltyApi,
    request: Request<pb::CreateProgramRequest>,
) -> Rpc<pb::CreateProgramResponse> {
    let key = request_key(&request, "CreateProgram", &request.get_ref().request_id);
    let cmd = convert::CreateProgram::try_from(request.into_inner())?;
    let reply = programs::create_program(&api.ctx, &key, cmd.program, |program| {
        pb::CreateProgramResponse {
            program: Some(program.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_program(
    api: &LoyaltyApi,
    request: Request<pb::GetProgramRequest>,
) -> Rpc<pb::GetProgramResponse> {
    let id = parse_uuid(&request.get_ref().program_id)
        .map_err(|d| ServiceError::invalid_argument("program_id", d))?;
    let program = programs::get(&api.ctx, id).await?;
    ok(pb::GetProgramResponse {
        program: Some(program.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_programs(
    api: &LoyaltyApi,
    request: Request<pb::ListProgramsRequest>,
) -> Rpc<pb::ListProgramsResponse> {
    let req = request.into_inner();
    let page = api.page_tokens.page::<_, Uuid>(&req)?;
    let states = convert::program_states(&req.states)?;
    let mut rows = programs::list(&api.ctx, &states, page.after, page.fetch()).await?;
    let next_page_token = page.finish(&mut rows, |p| p.program_id)?;
    ok(pb::ListProgramsResponse {
        programs: rows.into_iter().map(Into::into).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn update_program(
    api: &LoyaltyApi,
    request: Request<pb::UpdateProgramRequest>,
) -> Rpc<pb::UpdateProgramResponse> {
    let cmd = convert::UpdateProgram::try_from(request.into_inner())?;
    let program = programs::update(&api.ctx, cmd.program_id, cmd.patch).await?;
    ok(pb::UpdateProgramResponse {
        program: Some(program.into()),
    })
}
