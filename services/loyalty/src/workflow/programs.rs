//! Program use cases: CreateProgram (once per request id), GetProgram, ListPrograms and
//! UpdateProgram (under the program's row lock and its etag).

use custops_common::idempotency::RequestKey;
use prost::Message;
use uuid::Uuid;

use super::Context;
use crate::domain::Rejection;
use crate::domain::program::{NewProgram, Program, ProgramPatch, ProgramState};
use crate::store::{StoreResult, members, programs};

/// CreateProgram, once per request id: the program created at the service clock's now and
/// `reply` of it recorded with the key (`Context::once`); a replay answers the first
/// call's reply.
pub async fn create_program<R, F>(
    ctx: &Context,
    key: &RequestKey,
    program: NewProgram,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(Program) -> R + Send + 'static,
{
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let program = programs::create(conn, program, now).await?;
                Ok((program, Vec::new()).into())
            })
        },
        reply,
    )
    .await
}

/// GetProgram.
pub async fn get(ctx: &Context, program_id: Uuid) -> StoreResult<Program> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    programs::get(&mut conn, program_id).await
}

/// ListPrograms: a page of programs after `after`, in `states` if not empty.
pub async fn list(
    ctx: &Context,
    states: &[ProgramState],
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Program>> {
    programs::list(&ctx.pool, states, after, limit).await
}

/// UpdateProgram: applies `patch` if the etag is current; the program row is locked meanwhile.
/// A tier ladder that drops a tier members hold is TIER_IN_USE.
#[tracing::instrument(skip_all, fields(program_id = %program_id))]
pub async fn update(ctx: &Context, program_id: Uuid, patch: ProgramPatch) -> StoreResult<Program> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let mut program = programs::lock(&mut tx, program_id).await?;
    if program.etag != patch.etag {
        return Err(Rejection::StaleEtag {
            resource: "program",
        }
        .into());
    }
    if let Some(tiers) = &patch.tiers {
        let codes: Vec<&str> = tiers.iter().map(|t| t.code.as_str()).collect();
        let held = members::tier_held_outside(&mut tx, program_id, &codes).await?;
        if let Some(tier_code) = held {
            return Err(Rejection::TierInUse { tier_code }.into());
        }
    }
    if let Some(zone) = &patch.time_zone {
        programs::check_time_zone(&mut tx, zone).await?;
    }
    patch.apply(&mut program);
    let program = programs::save(&mut tx, &program, now).await?;
    tx.commit().await?;
    Ok(program)
}
