//! Programs: CreateProgram, GetProgram, ListPrograms, UpdateProgram. Each handler parses its
//! request (below the handlers; the rules document in `rules`), calls one use case in
//! `workflow::programs` and converts the program (`wire::programs`).

mod rules;

use custops_common::error::{ServiceError, Violations};
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use self::rules::{
    clawback, earning_rules, expiry_days, program_state, return_window, tier_policy, tiers,
};
use super::parse::{check_len, parse_uuid, request_id, request_key};
use super::{LoyaltyApi, Rpc, ok};
use crate::domain::Keyed;
use crate::domain::money::Currency;
use crate::domain::program::{NewProgram, ProgramPatch, ProgramRules, ProgramState};
use crate::workflow::programs;

#[tracing::instrument(skip_all)]
pub(super) async fn create_program(
    api: &LoyaltyApi,
    request: Request<pb::CreateProgramRequest>,
) -> Rpc<pb::CreateProgramResponse> {
    let key = request_key(&request, "CreateProgram", &request.get_ref().request_id);
    let cmd = Keyed::<NewProgram>::try_from(request.into_inner())?;
    let reply = programs::create_program(&api.ctx, &key, cmd.command, |program| {
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
    let states = program_states(&req.states)?;
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
    let cmd = UpdateProgram::try_from(request.into_inner())?;
    let program = programs::update(&api.ctx, cmd.program_id, cmd.patch).await?;
    ok(pb::UpdateProgramResponse {
        program: Some(program.into()),
    })
}

/// CreateProgram: the request id and the program.
impl TryFrom<pb::CreateProgramRequest> for Keyed<NewProgram> {
    type Error = ServiceError;

    fn try_from(req: pb::CreateProgramRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let p = req.program.unwrap_or_else(|| {
            v.add("program", "required");
            pb::Program::default()
        });
        check_len(&mut v, "program.display_name", &p.display_name, 1, 100);
        check_len(&mut v, "program.description", &p.description, 0, 2000);
        let currency = v.take("program.currency", Currency::parse(&p.currency));
        let state = program_state(&mut v, "program.state", p.state);
        let time_zone = if p.time_zone.is_empty() {
            "UTC".to_owned()
        } else {
            p.time_zone
        };
        let tiers = tiers(&mut v, "program.tiers", p.tiers);
        let earning = earning_rules(&mut v, "program.earning_rules", p.earning_rules, &tiers);
        let rules = ProgramRules {
            earning,
            expire_after_days: expiry_days(
                &mut v,
                "program.expiry_policy.expire_after_days",
                p.expiry_policy,
            ),
            return_window_days: return_window(
                &mut v,
                "program.return_window_days",
                p.return_window_days,
            ),
            clawback: clawback(&mut v, "program.clawback_policy", p.clawback_policy),
            tier_policy: tier_policy(&mut v, "program.tier_policy", p.tier_policy, tiers.len()),
            tiers,
        };
        v.into_result()?;
        Ok(Self {
            request_id,
            command: NewProgram {
                display_name: p.display_name,
                description: p.description,
                state,
                currency: currency.ok_or_else(|| {
                    ServiceError::invalid_argument("program.currency", "required")
                })?,
                time_zone,
                rules,
            },
        })
    }
}

/// UpdateProgram: which program and what changes.
#[derive(Debug)]
struct UpdateProgram {
    /// The program.
    program_id: Uuid,
    /// The changes.
    patch: ProgramPatch,
}

impl TryFrom<pb::UpdateProgramRequest> for UpdateProgram {
    type Error = ServiceError;

    fn try_from(req: pb::UpdateProgramRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let p = req.program.unwrap_or_default();
        let program_id = v.take("program.program_id", parse_uuid(&p.program_id));
        let etag = v.take(
            "program.etag",
            p.etag
                .parse::<i64>()
                .map_err(|_| "the current etag is required".to_owned()),
        );
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "required and non-empty");
        }
        let mut patch = ProgramPatch::default();
        let tiers_given = paths.iter().any(|path| path == "tiers");
        let ladder = tiers(&mut Violations::new(), "program.tiers", p.tiers.clone());
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    check_len(&mut v, "program.display_name", &p.display_name, 1, 100);
                    patch.display_name = Some(p.display_name.clone());
                }
                "description" => {
                    check_len(&mut v, "program.description", &p.description, 0, 2000);
                    patch.description = Some(p.description.clone());
                }
                "state" => patch.state = Some(program_state(&mut v, "program.state", p.state)),
                "time_zone" => {
                    patch.time_zone = Some(if p.time_zone.is_empty() {
                        "UTC".into()
                    } else {
                        p.time_zone.clone()
                    })
                }
                "earning_rules" => {
                    patch.earning = Some(earning_rules(
                        &mut v,
                        "program.earning_rules",
                        p.earning_rules.clone(),
                        &ladder,
                    ));
                }
                "expiry_policy" => {
                    patch.expire_after_days = Some(expiry_days(
                        &mut v,
                        "program.expiry_policy.expire_after_days",
                        p.expiry_policy,
                    ));
                }
                "return_window_days" => {
                    patch.return_window_days = Some(return_window(
                        &mut v,
                        "program.return_window_days",
                        p.return_window_days,
                    ));
                }
                "clawback_policy" => {
                    patch.clawback = Some(clawback(
                        &mut v,
                        "program.clawback_policy",
                        p.clawback_policy,
                    ));
                }
                "tiers" => patch.tiers = Some(tiers(&mut v, "program.tiers", p.tiers.clone())),
                "tier_policy" => {
                    let count = if tiers_given { ladder.len() } else { 2 };
                    patch.tier_policy = Some(tier_policy(
                        &mut v,
                        "program.tier_policy",
                        p.tier_policy,
                        count,
                    ));
                }
                other => v.add("update_mask", format!("`{other}` is not an updatable path")),
            }
        }
        v.into_result()?;
        patch.etag = etag.unwrap_or_default();
        Ok(Self {
            program_id: program_id.unwrap_or_default(),
            patch,
        })
    }
}

/// Program states of a ListPrograms filter.
fn program_states(states: &[i32]) -> Result<Vec<ProgramState>, ServiceError> {
    states
        .iter()
        .map(|s| match pb::ProgramState::try_from(*s) {
            Ok(pb::ProgramState::Active) => Ok(ProgramState::Active),
            Ok(pb::ProgramState::Archived) => Ok(ProgramState::Archived),
            _ => Err(ServiceError::invalid_argument(
                "states",
                "ACTIVE or ARCHIVED",
            )),
        })
        .collect()
}
