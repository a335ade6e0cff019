//! The `custops.loyalty.v1.LoyaltyService` API: transport only. Each handler converts the
//! request (`convert`), runs the store operation, and converts the result back. Mutations
//! run through [`PgStore::idempotent`], which stores the encoded response for replays.
//! RPCs not implemented yet answer UNIMPLEMENTED through the generated default stubs.

pub mod convert;
pub mod error;

use custops_common::auth::Caller;
use custops_common::error::ServiceError;
use custops_common::paging::{PageTokens, page_size};
use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::loyalty::v1::loyalty_service_server::{
    LoyaltyService, LoyaltyServiceServer,
};
use prost::Message;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use self::convert::{Keyed, parse_uuid};
use crate::directory::CustomerDirectory;
use crate::domain::Rejection;
use crate::domain::benefit::{self, NotEntitled};
use crate::domain::member::MemberRef;
use crate::store::ledger::{Origin, StatementFilter};
use crate::store::{
    Completed, PgStore, RequestKey, StoreError, birthdays, export, ledger, lots, members, programs,
    rewards, status, tiers,
};
use crate::{events, jobs, wire};

/// The gRPC handlers of the loyalty service.
#[derive(Debug, Clone)]
pub struct LoyaltyApi {
    store: PgStore,
    page_tokens: PageTokens,
    /// Profiles, to check the customer of an enrolment; `None` when loyalty runs standalone.
    customers: Option<CustomerDirectory>,
}

/// The API wrapped for serving, with explicit message size limits.
pub fn server(
    store: PgStore,
    page_tokens: PageTokens,
    customers: Option<CustomerDirectory>,
) -> LoyaltyServiceServer<LoyaltyApi> {
    LoyaltyServiceServer::new(LoyaltyApi {
        store,
        page_tokens,
        customers,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The idempotency key of a mutation: caller, request id, method and the request's
/// fingerprint.
fn request_key<T: Message>(
    request: &Request<T>,
    method: &'static str,
    request_id: &str,
) -> RequestKey {
    RequestKey::new(
        Caller::service_of(request),
        request_id,
        method,
        request.get_ref(),
    )
}

fn decode<T: Message + Default>(bytes: &[u8]) -> Result<Response<T>, Status> {
    T::decode(bytes)
        .map(Response::new)
        .map_err(|e| ServiceError::internal(e).into())
}

fn member_ref(field: &str, member: Option<pb::MemberRef>) -> Result<MemberRef, ServiceError> {
    use pb::member_ref::Key;
    match member.and_then(|m| m.key) {
        Some(Key::MemberId(id)) => parse_uuid(&id)
            .map(MemberRef::Id)
            .map_err(|d| ServiceError::invalid_argument(format!("{field}.member_id"), d)),
        Some(Key::ProgramCustomer(pc)) => Ok(MemberRef::Customer {
            program_id: parse_uuid(&pc.program_id).map_err(|d| {
                ServiceError::invalid_argument(format!("{field}.program_customer.program_id"), d)
            })?,
            customer_id: parse_uuid(&pc.customer_id).map_err(|d| {
                ServiceError::invalid_argument(format!("{field}.program_customer.customer_id"), d)
            })?,
        }),
        None => Err(ServiceError::invalid_argument(field, "required")),
    }
}

impl LoyaltyApi {
    async fn change_status(
        &self,
        member: Option<pb::MemberRef>,
        change: status::Change,
        reason: String,
        operator_id: String,
        reason_required: bool,
    ) -> Result<status::Changed, Status> {
        let mut v = custops_common::error::Violations::new();
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
        let now = self.store.clock().now();
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(ServiceError::from)?;
        let changed = status::change(&mut tx, &member, change, &reason, &operator_id, now).await?;
        events::append(&mut tx, &changed.events)
            .await
            .map_err(ServiceError::from)?;
        tx.commit().await.map_err(ServiceError::from)?;
        Ok(changed)
    }

    async fn member_view(&self, member: MemberRef, full: bool) -> Result<pb::Member, Status> {
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let now = self.store.clock().now();
        let mut locked = members::read(&mut conn, &member, now).await?;
        let member = if full {
            members::full_view(&mut conn, locked, now).await?
        } else {
            members::as_of(&mut conn, &mut locked, now).await?;
            locked.member
        };
        Ok(member.into())
    }
}

#[tonic::async_trait]
impl LoyaltyService for LoyaltyApi {
    #[tracing::instrument(skip_all)]
    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> Result<Response<pb::CreateProgramResponse>, Status> {
        let key = request_key(&request, "CreateProgram", &request.get_ref().request_id);
        let cmd = convert::CreateProgram::try_from(request.into_inner())?;
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let program = programs::create(conn, cmd.program, now).await?;
                    let response = pb::CreateProgramResponse {
                        program: Some(program.into()),
                    };
                    Ok(Completed::response(response.encode_to_vec()))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn get_program(
        &self,
        request: Request<pb::GetProgramRequest>,
    ) -> Result<Response<pb::GetProgramResponse>, Status> {
        let id = parse_uuid(&request.get_ref().program_id)
            .map_err(|d| ServiceError::invalid_argument("program_id", d))?;
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let program = programs::get(&mut conn, id).await?;
        Ok(Response::new(pb::GetProgramResponse {
            program: Some(program.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> Result<Response<pb::ListProgramsResponse>, Status> {
        let req = request.into_inner();
        let page = self.page_tokens.page::<_, Uuid>(&req)?;
        let states = convert::program_states(&req.states)?;
        let mut rows = programs::list(self.store.pool(), &states, page.after, page.fetch()).await?;
        let next_page_token = page.finish(&mut rows, |p| p.program_id)?;
        Ok(Response::new(pb::ListProgramsResponse {
            programs: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> Result<Response<pb::UpdateProgramResponse>, Status> {
        let cmd = convert::UpdateProgram::try_from(request.into_inner())?;
        let now = self.store.clock().now();
        let program = programs::update(self.store.pool(), cmd.program_id, cmd.patch, now).await?;
        Ok(Response::new(pb::UpdateProgramResponse {
            program: Some(program.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn enrol_member(
        &self,
        request: Request<pb::EnrolMemberRequest>,
    ) -> Result<Response<pb::EnrolMemberResponse>, Status> {
        let key = request_key(&request, "EnrolMember", &request.get_ref().request_id);
        let mut cmd = convert::Enrol::try_from(request.into_inner())?;
        // A replay answers what the first call did, whatever profiles says about the customer
        // since; only a new enrolment is checked (outside the transaction: no row is locked
        // while profiles is asked).
        if let Some(bytes) = self.store.replay(&key).await? {
            return decode(&bytes);
        }
        if let Some(customers) = &self.customers {
            let requested = cmd.command.customer_id;
            let standing = customers
                .standing(requested)
                .await
                .map_err(error::directory_status)?;
            cmd.command.customer_id = standing
                .enrols(requested)
                .map_err(error::rejection_status)?;
        }
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let member = members::enrol(conn, &cmd.command, now).await?;
                    let event = crate::domain::event::Event::MemberEnrolled(member.clone());
                    let events = events::outbox_events(&[event]);
                    let response = pb::EnrolMemberResponse {
                        member: Some(member.into()),
                    };
                    Ok(Completed::with_events(response.encode_to_vec(), events))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::GetMemberResponse>, Status> {
        let req = request.into_inner();
        let id = parse_uuid(&req.member_id)
            .map_err(|d| ServiceError::invalid_argument("member_id", d))?;
        let full = convert::full_view(req.view, true)?;
        let member = self.member_view(MemberRef::Id(id), full).await?;
        Ok(Response::new(pb::GetMemberResponse {
            member: Some(member),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_member_by_customer(
        &self,
        request: Request<pb::GetMemberByCustomerRequest>,
    ) -> Result<Response<pb::GetMemberByCustomerResponse>, Status> {
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
        let full = convert::full_view(req.view, true)?;
        let member = self.member_view(member, full).await?;
        Ok(Response::new(pb::GetMemberByCustomerResponse {
            member: Some(member),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn earn_points(
        &self,
        request: Request<pb::EarnPointsRequest>,
    ) -> Result<Response<pb::EarnPointsResponse>, Status> {
        let key = request_key(&request, "EarnPoints", &request.get_ref().request_id);
        let cmd = Keyed::try_from(request.into_inner())?;
        let origin = Origin {
            caller: key.caller.clone(),
            request_id: cmd.request_id,
        };
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let out = ledger::earn(conn, origin, cmd.command, now).await?;
                    let events = events::outbox_events(&out.events);
                    let currency = out.member.currency.clone();
                    let response = pb::EarnPointsResponse {
                        tier_change: out
                            .tier_change
                            .map(|c| wire::tiers::tier_change_pb(&out.member, c, &currency)),
                        ledger_entry: Some(out.entry.into()),
                        member: Some(out.member.into()),
                    };
                    Ok(Completed::with_events(response.encode_to_vec(), events))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn redeem_points(
        &self,
        request: Request<pb::RedeemPointsRequest>,
    ) -> Result<Response<pb::RedeemPointsResponse>, Status> {
        let key = request_key(&request, "RedeemPoints", &request.get_ref().request_id);
        let cmd = Keyed::try_from(request.into_inner())?;
        let origin = Origin {
            caller: key.caller.clone(),
            request_id: cmd.request_id,
        };
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let out = ledger::redeem(conn, origin, cmd.command, now).await?;
                    let events = events::outbox_events(&out.events);
                    let response = pb::RedeemPointsResponse {
                        ledger_entry: Some(out.entry.into()),
                        member: Some(out.member.into()),
                    };
                    Ok(Completed::with_events(response.encode_to_vec(), events))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn adjust_points(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> Result<Response<pb::AdjustPointsResponse>, Status> {
        let key = request_key(&request, "AdjustPoints", &request.get_ref().request_id);
        let cmd = Keyed::try_from(request.into_inner())?;
        let origin = Origin {
            caller: key.caller.clone(),
            request_id: cmd.request_id,
        };
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let out = ledger::adjust(conn, origin, cmd.command, now).await?;
                    let events = events::outbox_events(&out.events);
                    let currency = out.member.currency.clone();
                    let response = pb::AdjustPointsResponse {
                        tier_change: out
                            .tier_change
                            .map(|c| wire::tiers::tier_change_pb(&out.member, c, &currency)),
                        ledger_entry: Some(out.entry.into()),
                        member: Some(out.member.into()),
                    };
                    Ok(Completed::with_events(response.encode_to_vec(), events))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn reverse_points(
        &self,
        request: Request<pb::ReversePointsRequest>,
    ) -> Result<Response<pb::ReversePointsResponse>, Status> {
        let key = request_key(&request, "ReversePoints", &request.get_ref().request_id);
        let cmd = Keyed::try_from(request.into_inner())?;
        let origin = Origin {
            caller: key.caller.clone(),
            request_id: cmd.request_id,
        };
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let out = ledger::reverse(conn, origin, cmd.command, now).await?;
                    let events = events::outbox_events(&out.events);
                    let response = pb::ReversePointsResponse {
                        ledger_entry: Some(out.entry.into()),
                        member: Some(out.member.into()),
                    };
                    Ok(Completed::with_events(response.encode_to_vec(), events))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn get_ledger_entry(
        &self,
        request: Request<pb::GetLedgerEntryRequest>,
    ) -> Result<Response<pb::GetLedgerEntryResponse>, Status> {
        let id = parse_uuid(&request.get_ref().ledger_entry_id)
            .map_err(|d| ServiceError::invalid_argument("ledger_entry_id", d))?;
        let entry = ledger::get(self.store.pool(), id).await?;
        Ok(Response::new(pb::GetLedgerEntryResponse {
            ledger_entry: Some(entry.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let req = request.into_inner();
        let member = member_ref("member", req.member.clone())?;
        let page = self.page_tokens.page::<_, Uuid>(&req)?;
        let filter = req.filter.clone().unwrap_or_default();
        let range = filter.create_time_range.unwrap_or_default();
        let time = |field: &str, t: Option<&prost_types::Timestamp>| {
            t.map(|t| {
                convert::from_timestamp(t).map_err(|d| ServiceError::invalid_argument(field, d))
            })
            .transpose()
        };
        let statement = StatementFilter {
            kinds: convert::entry_kinds(&filter.kinds)?,
            from: time(
                "filter.create_time_range.start_time",
                range.start_time.as_ref(),
            )?,
            until: time("filter.create_time_range.end_time", range.end_time.as_ref())?,
            order_id: (!filter.order_id.is_empty()).then_some(filter.order_id),
            oldest_first: req.oldest_first,
        };
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let member_id = members::load(&mut conn, &member, false)
            .await?
            .member
            .member_id;
        drop(conn);
        let mut rows = ledger::statement(
            self.store.pool(),
            member_id,
            &statement,
            page.after,
            page.fetch(),
        )
        .await?;
        let next_page_token = page.finish(&mut rows, |e| e.ledger_entry_id)?;
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            ledger_entries: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn calculate_purchase_points(
        &self,
        request: Request<pb::CalculatePurchasePointsRequest>,
    ) -> Result<Response<pb::CalculatePurchasePointsResponse>, Status> {
        let req = request.into_inner();
        let program_id = parse_uuid(&req.program_id)
            .map_err(|d| ServiceError::invalid_argument("program_id", d))?;
        let earn = Keyed::<crate::domain::ledger::EarnCommand>::try_from(pb::EarnPointsRequest {
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
        let crate::domain::ledger::EarnSource::Purchase(purchase) = earn.command.source else {
            return Err(ServiceError::invalid_argument("purchase", "required").into());
        };
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let program = programs::get(&mut conn, program_id).await?;
        if purchase.currency != program.currency {
            return Err(ServiceError::invalid_argument(
                "purchase.amount.currency",
                format!("the program earns in {}", program.currency),
            )
            .into());
        }
        let mut tier = program.rules.base_tier_code().to_owned();
        let mut birth_month = None;
        if let Ok(customer_id) = parse_uuid(&req.customer_id) {
            let member = MemberRef::Customer {
                program_id,
                customer_id,
            };
            if let Ok(locked) = members::load(&mut conn, &member, false).await {
                tier = locked.member.tier.code;
                birth_month = birthdays::month(&mut conn, locked.member.customer_id).await?;
            }
        }
        let now = self.store.clock().now();
        let when = crate::domain::earning::purchase_instant(&purchase, now);
        let month = programs::month_in_zone(&mut conn, when, &program.time_zone).await?;
        let calculation = crate::domain::earning::calculate(
            &program.rules.earning,
            &purchase,
            &tier,
            birth_month,
            month,
            now,
        );
        crate::domain::earning::check_entry_limit(&calculation).map_err(error::rejection_status)?;
        Ok(Response::new(pb::CalculatePurchasePointsResponse {
            calculation: Some(wire::ledger::calculation_pb(calculation, &program.currency)),
            pending: program.rules.return_window_days > 0,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn suspend_member(
        &self,
        request: Request<pb::SuspendMemberRequest>,
    ) -> Result<Response<pb::SuspendMemberResponse>, Status> {
        let req = request.into_inner();
        let changed = self
            .change_status(
                req.member,
                status::Change::Suspend,
                req.reason,
                req.operator_id,
                true,
            )
            .await?;
        Ok(Response::new(pb::SuspendMemberResponse {
            member: Some(changed.member.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn reactivate_member(
        &self,
        request: Request<pb::ReactivateMemberRequest>,
    ) -> Result<Response<pb::ReactivateMemberResponse>, Status> {
        let req = request.into_inner();
        let changed = self
            .change_status(
                req.member,
                status::Change::Reactivate,
                req.reason,
                req.operator_id,
                false,
            )
            .await?;
        Ok(Response::new(pb::ReactivateMemberResponse {
            member: Some(changed.member.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn close_member(
        &self,
        request: Request<pb::CloseMemberRequest>,
    ) -> Result<Response<pb::CloseMemberResponse>, Status> {
        let req = request.into_inner();
        let changed = self
            .change_status(
                req.member,
                status::Change::Close,
                req.reason,
                req.operator_id,
                true,
            )
            .await?;
        Ok(Response::new(pb::CloseMemberResponse {
            member: Some(changed.member.into()),
            forfeit_entry: changed.forfeit.map(Into::into),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let req = request.into_inner();
        let page = self.page_tokens.page::<_, Uuid>(&req);
        let mut v = custops_common::error::Violations::new();
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
            .and_then(|t| v.take("enrol_time_range.start_time", convert::from_timestamp(t)));
        let until = range
            .end_time
            .as_ref()
            .and_then(|t| v.take("enrol_time_range.end_time", convert::from_timestamp(t)));
        let full = v.take(
            "view",
            convert::full_view(req.view, false).map_err(|e| e.to_string()),
        );
        v.into_result()?;
        let (page, full) = (page?, full.unwrap_or(false));
        let filter = members::MemberFilter {
            program_id,
            customer_id,
            statuses,
            tier_codes: req.tier_codes,
            from,
            until,
        };
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let now = self.store.clock().now();
        let mut rows = members::list(&mut conn, &filter, page.after, page.fetch(), now).await?;
        let next_page_token = page.finish(&mut rows, |m| m.member_id)?;
        let mut out = Vec::with_capacity(rows.len());
        for member in rows {
            if full {
                let locked =
                    members::read(&mut conn, &MemberRef::Id(member.member_id), now).await?;
                out.push(members::full_view(&mut conn, locked, now).await?.into());
            } else {
                out.push(member.into());
            }
        }
        Ok(Response::new(pb::ListMembersResponse {
            members: out,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_point_lots(
        &self,
        request: Request<pb::ListPointLotsRequest>,
    ) -> Result<Response<pb::ListPointLotsResponse>, Status> {
        let req = request.into_inner();
        let member = member_ref("member", req.member.clone())?;
        let page = self.page_tokens.page::<_, Uuid>(&req)?;
        let mut states = Vec::new();
        for s in &req.states {
            match pb::PointLotState::try_from(*s) {
                Ok(pb::PointLotState::Available) => states.push(lots::LotState::Available),
                Ok(pb::PointLotState::Exhausted) => states.push(lots::LotState::Exhausted),
                Ok(pb::PointLotState::Expired) => states.push(lots::LotState::Expired),
                Ok(pb::PointLotState::Pending) => states.push(lots::LotState::Pending),
                _ => {
                    return Err(ServiceError::invalid_argument("states", "a PointLotState").into());
                }
            }
        }
        if req.states.is_empty() {
            states.extend([lots::LotState::Pending, lots::LotState::Available]);
        }
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let member_id = members::load(&mut conn, &member, false)
            .await?
            .member
            .member_id;
        drop(conn);
        let now = self.store.clock().now();
        let mut rows = lots::list(
            self.store.pool(),
            member_id,
            &states,
            page.after,
            page.fetch(),
            now,
        )
        .await?;
        let next_page_token = page.finish(&mut rows, |l| l.point_lot_id)?;
        Ok(Response::new(pb::ListPointLotsResponse {
            point_lots: rows.into_iter().map(wire::members::lot_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_expiring_points(
        &self,
        request: Request<pb::GetExpiringPointsRequest>,
    ) -> Result<Response<pb::GetExpiringPointsResponse>, Status> {
        let req = request.into_inner();
        let member = member_ref("member", req.member)?;
        let days = match req.within_days {
            0 => 90,
            d @ 1..=366 => d,
            _ => return Err(ServiceError::invalid_argument("within_days", "must be 0-366").into()),
        };
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let loaded = members::load(&mut conn, &member, false).await?;
        drop(conn);
        let now = self.store.clock().now();
        let until = now + chrono::Duration::days(i64::from(days));
        let by_day = lots::expiring_by_day(
            self.store.pool(),
            loaded.member.member_id,
            &loaded.program.time_zone,
            now,
            until,
        )
        .await?;
        Ok(Response::new(pb::GetExpiringPointsResponse {
            total_points: by_day.iter().fold(0_i64, |t, (_, p)| t.saturating_add(*p)),
            days: by_day
                .into_iter()
                .map(|(d, p)| wire::members::expiring_day_pb(d, p))
                .collect(),
            horizon_end_time: Some(wire::timestamp(until)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tier_changes(
        &self,
        request: Request<pb::ListTierChangesRequest>,
    ) -> Result<Response<pb::ListTierChangesResponse>, Status> {
        let req = request.into_inner();
        let page = self.page_tokens.page::<_, Uuid>(&req);
        let mut v = custops_common::error::Violations::new();
        let member_id = (!req.member_id.is_empty())
            .then(|| v.take("member_id", parse_uuid(&req.member_id)))
            .flatten();
        let program_id = (!req.program_id.is_empty())
            .then(|| v.take("program_id", parse_uuid(&req.program_id)))
            .flatten();
        if req.member_id.is_empty() && req.program_id.is_empty() {
            v.add("member_id", "member_id or program_id is required");
        }
        let mut directions = Vec::new();
        for d in &req.directions {
            match pb::TierChangeDirection::try_from(*d) {
                Ok(pb::TierChangeDirection::Unspecified) | Err(_) => {
                    v.add("directions", "INITIAL, UPGRADE or DOWNGRADE");
                }
                Ok(d) => directions.push(d as i16),
            }
        }
        let range = req.change_time_range.unwrap_or_default();
        let from = range
            .start_time
            .as_ref()
            .and_then(|t| v.take("change_time_range.start_time", convert::from_timestamp(t)));
        let until = range
            .end_time
            .as_ref()
            .and_then(|t| v.take("change_time_range.end_time", convert::from_timestamp(t)));
        v.take(
            "page_size",
            page_size(req.page_size).map_err(|e| e.message()),
        );
        v.into_result()?;
        let page = page?;
        let filter = tiers::TierChangeFilter {
            member_id,
            merged_members: true,
            program_id,
            directions,
            from,
            until,
        };
        let mut rows = tiers::list(self.store.pool(), &filter, page.after, page.fetch()).await?;
        let next_page_token = page.finish(&mut rows, |c| c.tier_change_id)?;
        Ok(Response::new(pb::ListTierChangesResponse {
            tier_changes: rows
                .into_iter()
                .map(wire::tiers::tier_change_row_pb)
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_entitlements(
        &self,
        request: Request<pb::ListEntitlementsRequest>,
    ) -> Result<Response<pb::ListEntitlementsResponse>, Status> {
        let member = member_ref("member", request.into_inner().member)?;
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let locked = members::load(&mut conn, &member, false).await?;
        let held = benefit::entitlements(&locked.program.rules, &locked.member);
        Ok(Response::new(pb::ListEntitlementsResponse {
            member_id: locked.member.member_id.to_string(),
            tier_code: locked.member.tier.code,
            entitlements: held
                .into_iter()
                .map(wire::programs::entitlement_pb)
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_entitlement(
        &self,
        request: Request<pb::CheckEntitlementRequest>,
    ) -> Result<Response<pb::CheckEntitlementResponse>, Status> {
        let req = request.into_inner();
        let member = member_ref("member", req.member)?;
        if req.benefit_code.is_empty() {
            return Err(ServiceError::invalid_argument("benefit_code", "required").into());
        }
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let loaded = match members::load(&mut conn, &member, false).await {
            Ok(locked) => Ok(locked),
            // A customer who is not enrolled is an answer ("not entitled"), not an error.
            Err(StoreError::Rejected(Rejection::NotFound { .. }))
                if matches!(member, MemberRef::Customer { .. }) =>
            {
                Err(member)
            }
            Err(other) => return Err(other.into()),
        };
        let (rules, locked) = match loaded {
            Ok(locked) => (locked.program.rules.clone(), Some(locked)),
            Err(MemberRef::Customer { program_id, .. }) => {
                (programs::get(&mut conn, program_id).await?.rules, None)
            }
            Err(MemberRef::Id(id)) => {
                return Err(ServiceError::not_found("member", id.to_string()).into());
            }
        };
        let Some(lowest) = benefit::lowest_tier_with(&rules, &req.benefit_code) else {
            return Err(ServiceError::not_found("benefit", req.benefit_code).into());
        };
        let mut response = pb::CheckEntitlementResponse {
            lowest_eligible_tier_code: lowest,
            ..Default::default()
        };
        let Some(locked) = locked else {
            response.not_entitled_reason = pb::NotEntitledReason::NotEnrolled as i32;
            return Ok(Response::new(response));
        };
        response.tier_code = locked.member.tier.code.clone();
        match benefit::check(&rules, &locked.member, &req.benefit_code) {
            Ok(entitlement) => {
                response.entitled = true;
                response.entitlement = Some(wire::programs::entitlement_pb(entitlement));
            }
            Err(NotEntitled::MemberNotActive) => {
                response.not_entitled_reason = pb::NotEntitledReason::MemberNotActive as i32;
            }
            Err(NotEntitled::TierNotEligible) => {
                response.not_entitled_reason = pb::NotEntitledReason::TierNotEligible as i32;
            }
        }
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn run_point_expiry(
        &self,
        request: Request<pb::RunPointExpiryRequest>,
    ) -> Result<Response<pb::RunPointExpiryResponse>, Status> {
        let req = request.into_inner();
        let (program, max) = job_scope(&req.program_id, req.max_members)?;
        let now = self.store.clock().now();
        if let Some(id) = program {
            let mut conn = self
                .store
                .pool()
                .acquire()
                .await
                .map_err(ServiceError::from)?;
            programs::get(&mut conn, id).await?;
        }
        let report = jobs::point_expiry(&self.store, program, max, now).await?;
        Ok(Response::new(pb::RunPointExpiryResponse {
            as_of_time: Some(wire::timestamp(now)),
            members_processed: report.members,
            lots_expired: report.lots,
            points_expired: report.points,
            more_due: report.more_due,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn run_point_release(
        &self,
        request: Request<pb::RunPointReleaseRequest>,
    ) -> Result<Response<pb::RunPointReleaseResponse>, Status> {
        let req = request.into_inner();
        let (program, max) = job_scope(&req.program_id, req.max_members)?;
        let now = self.store.clock().now();
        if let Some(id) = program {
            let mut conn = self
                .store
                .pool()
                .acquire()
                .await
                .map_err(ServiceError::from)?;
            programs::get(&mut conn, id).await?;
        }
        let report = jobs::point_release(&self.store, program, max, now).await?;
        Ok(Response::new(pb::RunPointReleaseResponse {
            as_of_time: Some(wire::timestamp(now)),
            members_processed: report.members,
            lots_released: report.lots,
            points_released: report.points,
            more_due: report.more_due,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn run_tier_review(
        &self,
        request: Request<pb::RunTierReviewRequest>,
    ) -> Result<Response<pb::RunTierReviewResponse>, Status> {
        let req = request.into_inner();
        let (program, max) = job_scope(&req.program_id, req.max_members)?;
        let now = self.store.clock().now();
        if let Some(id) = program {
            let mut conn = self
                .store
                .pool()
                .acquire()
                .await
                .map_err(ServiceError::from)?;
            programs::get(&mut conn, id).await?;
        }
        let report = jobs::tier_review(&self.store, program, max, now).await?;
        Ok(Response::new(pb::RunTierReviewResponse {
            as_of_time: Some(wire::timestamp(now)),
            members_reviewed: report.members,
            downgrades_scheduled: report.downgrades_scheduled,
            downgrades_applied: report.downgrades_applied,
            downgrades_cancelled: report.downgrades_cancelled,
            upgrades: report.upgrades,
            more_due: report.more_due,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> Result<Response<pb::CreateRewardResponse>, Status> {
        let key = request_key(&request, "CreateReward", &request.get_ref().request_id);
        let cmd = Keyed::try_from(request.into_inner())?;
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let reward = rewards::create(conn, cmd.command, now).await?;
                    let response = pb::CreateRewardResponse {
                        reward: Some(reward.into()),
                    };
                    Ok(Completed::response(response.encode_to_vec()))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn reverse_reward_redemption(
        &self,
        request: Request<pb::ReverseRewardRedemptionRequest>,
    ) -> Result<Response<pb::ReverseRewardRedemptionResponse>, Status> {
        let key = request_key(
            &request,
            "ReverseRewardRedemption",
            &request.get_ref().request_id,
        );
        let cmd = Keyed::try_from(request.into_inner())?;
        let origin = Origin {
            caller: key.caller.clone(),
            request_id: cmd.request_id,
        };
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let out = rewards::reverse_redemption(conn, origin, cmd.command, now).await?;
                    let events = events::outbox_events(&out.applied.events);
                    let response = pb::ReverseRewardRedemptionResponse {
                        reward_redemption: Some(out.redemption.into()),
                        ledger_entry: Some(out.applied.entry.into()),
                        member: Some(out.applied.member.into()),
                        reward: Some(out.reward.into()),
                    };
                    Ok(Completed::with_events(response.encode_to_vec(), events))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn adjust_reward_stock(
        &self,
        request: Request<pb::AdjustRewardStockRequest>,
    ) -> Result<Response<pb::AdjustRewardStockResponse>, Status> {
        let key = request_key(&request, "AdjustRewardStock", &request.get_ref().request_id);
        let cmd = Keyed::try_from(request.into_inner())?;
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let reward = rewards::adjust_stock(conn, cmd.command).await?;
                    let response = pb::AdjustRewardStockResponse {
                        reward: Some(reward.into()),
                    };
                    Ok(Completed::response(response.encode_to_vec()))
                })
            })
            .await?;
        decode(&bytes)
    }

    #[tracing::instrument(skip_all)]
    async fn get_reward_redemption(
        &self,
        request: Request<pb::GetRewardRedemptionRequest>,
    ) -> Result<Response<pb::GetRewardRedemptionResponse>, Status> {
        let id = parse_uuid(&request.get_ref().reward_redemption_id)
            .map_err(|d| ServiceError::invalid_argument("reward_redemption_id", d))?;
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let redemption = rewards::get_redemption(&mut conn, id, false).await?;
        Ok(Response::new(pb::GetRewardRedemptionResponse {
            reward_redemption: Some(redemption.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> Result<Response<pb::ListRewardsResponse>, Status> {
        let req = request.into_inner();
        let program_id = parse_uuid(&req.program_id)
            .map_err(|d| ServiceError::invalid_argument("program_id", d))?;
        let page = self.page_tokens.page::<_, Uuid>(&req)?;
        let mut states = Vec::new();
        for s in &req.states {
            states.push(match pb::RewardState::try_from(*s) {
                Ok(pb::RewardState::Active) => crate::domain::reward::RewardState::Active,
                Ok(pb::RewardState::Inactive) => crate::domain::reward::RewardState::Inactive,
                _ => {
                    return Err(
                        ServiceError::invalid_argument("states", "ACTIVE or INACTIVE").into(),
                    );
                }
            });
        }
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let program = programs::get(&mut conn, program_id).await?;
        drop(conn);
        // A tier may redeem rewards whose minimum tier is at or below it.
        let tier_codes_allowed = if req.tier_code.is_empty() {
            None
        } else {
            let Some((rank, _)) = program.rules.tier(&req.tier_code) else {
                return Err(ServiceError::invalid_argument(
                    "tier_code",
                    "not a tier of the program",
                )
                .into());
            };
            Some(
                program.rules.tiers[..=usize::try_from(rank).unwrap_or(0)]
                    .iter()
                    .map(|t| t.code.clone())
                    .collect(),
            )
        };
        let filter = rewards::RewardFilter {
            program_id,
            states,
            tier_codes_allowed,
            redeemable_at: req.redeemable_only.then(|| self.store.clock().now()),
        };
        let mut rows = rewards::list(self.store.pool(), &filter, page.after, page.fetch()).await?;
        let next_page_token = page.finish(&mut rows, |r| r.reward_id)?;
        Ok(Response::new(pb::ListRewardsResponse {
            rewards: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> Result<Response<pb::UpdateRewardResponse>, Status> {
        let cmd = convert::UpdateReward::try_from(request.into_inner())?;
        let now = self.store.clock().now();
        let reward = rewards::update(self.store.pool(), cmd.reward_id, cmd.patch, now).await?;
        Ok(Response::new(pb::UpdateRewardResponse {
            reward: Some(reward.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_reward_redemptions(
        &self,
        request: Request<pb::ListRewardRedemptionsRequest>,
    ) -> Result<Response<pb::ListRewardRedemptionsResponse>, Status> {
        let req = request.into_inner();
        let page = self.page_tokens.page::<_, Uuid>(&req);
        let mut v = custops_common::error::Violations::new();
        let mut id = |field: &str, value: &str| {
            (!value.is_empty())
                .then(|| v.take(field, parse_uuid(value)))
                .flatten()
        };
        let program_id = id("program_id", &req.program_id);
        let member_id = id("member_id", &req.member_id);
        let reward_id = id("reward_id", &req.reward_id);
        if req.program_id.is_empty() && req.member_id.is_empty() && req.reward_id.is_empty() {
            v.add(
                "program_id",
                "one of program_id, member_id and reward_id is required",
            );
        }
        let mut states = Vec::new();
        for s in &req.states {
            match pb::RewardRedemptionState::try_from(*s) {
                Ok(pb::RewardRedemptionState::Unspecified) | Err(_) => {
                    v.add("states", "COMPLETED or REVERSED");
                }
                Ok(s) => states.push(s as i16),
            }
        }
        let range = req.redeem_time_range.unwrap_or_default();
        let from = range
            .start_time
            .as_ref()
            .and_then(|t| v.take("redeem_time_range.start_time", convert::from_timestamp(t)));
        let until = range
            .end_time
            .as_ref()
            .and_then(|t| v.take("redeem_time_range.end_time", convert::from_timestamp(t)));
        v.take(
            "page_size",
            page_size(req.page_size).map_err(|e| e.message()),
        );
        v.into_result()?;
        let page = page?;
        let filter = rewards::RedemptionFilter {
            program_id,
            member_id,
            reward_id,
            states,
            from,
            until,
        };
        let mut rows =
            rewards::list_redemptions(self.store.pool(), &filter, page.after, page.fetch()).await?;
        let next_page_token = page.finish(&mut rows, |r| r.reward_redemption_id)?;
        Ok(Response::new(pb::ListRewardRedemptionsResponse {
            reward_redemptions: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_reward(
        &self,
        request: Request<pb::GetRewardRequest>,
    ) -> Result<Response<pb::GetRewardResponse>, Status> {
        let id = parse_uuid(&request.get_ref().reward_id)
            .map_err(|d| ServiceError::invalid_argument("reward_id", d))?;
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(ServiceError::from)?;
        let reward = rewards::get(&mut conn, id).await?;
        Ok(Response::new(pb::GetRewardResponse {
            reward: Some(reward.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn export_customer_data(
        &self,
        request: Request<pb::ExportCustomerDataRequest>,
    ) -> Result<Response<pb::ExportCustomerDataResponse>, Status> {
        let customer_id = parse_uuid(&request.get_ref().customer_id)
            .map_err(|d| ServiceError::invalid_argument("customer_id", d))?;
        let now = self.store.clock().now();
        let data = export::customer_data(self.store.pool(), customer_id, now).await?;
        Ok(Response::new(pb::ExportCustomerDataResponse {
            customer_data_export: Some(data.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn redeem_reward(
        &self,
        request: Request<pb::RedeemRewardRequest>,
    ) -> Result<Response<pb::RedeemRewardResponse>, Status> {
        let key = request_key(&request, "RedeemReward", &request.get_ref().request_id);
        let cmd = Keyed::try_from(request.into_inner())?;
        let origin = Origin {
            caller: key.caller.clone(),
            request_id: cmd.request_id,
        };
        let now = self.store.clock().now();
        let bytes = self
            .store
            .idempotent(&key, move |conn| {
                Box::pin(async move {
                    let out = rewards::redeem(conn, origin, cmd.command, now).await?;
                    let events = events::outbox_events(&out.applied.events);
                    let response = pb::RedeemRewardResponse {
                        reward_redemption: Some(out.redemption.into()),
                        ledger_entry: Some(out.applied.entry.into()),
                        member: Some(out.applied.member.into()),
                        reward: Some(out.reward.into()),
                    };
                    Ok(Completed::with_events(response.encode_to_vec(), events))
                })
            })
            .await?;
        decode(&bytes)
    }
}

/// The optional program filter and member cap of a job request.
fn job_scope(program_id: &str, max_members: i32) -> Result<(Option<Uuid>, i64), Status> {
    let program = if program_id.is_empty() {
        None
    } else {
        Some(parse_uuid(program_id).map_err(|d| ServiceError::invalid_argument("program_id", d))?)
    };
    if !(0..=1_000_000).contains(&max_members) {
        return Err(ServiceError::invalid_argument("max_members", "must be 0-1,000,000").into());
    }
    Ok((program, i64::from(max_members)))
}
