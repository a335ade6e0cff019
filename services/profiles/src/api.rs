//! The `custops.profiles.v1.ProfilesService` API: transport only. Each handler converts the
//! request (`commands`, `convert`: every field violation collected), calls one use case in
//! `workflow`, and converts the answer back (`crate::wire`); errors map to statuses in one
//! place (`error`).
//!
//! `customer360` fans GetCustomer360 out to the other services and `export` gathers their
//! parts of ExportCustomer, both through `peers`.

mod commands;
pub mod convert;
mod customer360;
mod error;
mod export;
mod import;
mod parse;
mod peers;

pub use peers::Peers;

use std::collections::{BTreeMap, HashSet};

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_common::paging::PageTokens;
use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::profiles::v1 as pb;
use custops_contracts::custops::profiles::v1::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::domain::AttributeDefinition;
use crate::error::ProfilesError;
use crate::workflow::activities::{ImportItem, activity_cursor};
use crate::workflow::consents::{ConsentUpdate, change_cursor};
use crate::workflow::customers::{CustomerUpdate, NewCustomer};
use crate::workflow::merges::{MergeCommand, UnmergeCommand, merge_cursor};
use crate::workflow::privacy::EraseCommand;
use crate::workflow::{self, Context};
use commands::Called;
use convert::{
    activity_from_pb, event_type_from_pb, identity_from_pb, parse_id, parse_range,
    property_definitions_from_pb, ts,
};
use import::ImportTally;
use parse::{activity_filter, customer_filter, enum_codes, invalid, one_id};

/// Items of an import stream committed per transaction.
const IMPORT_BATCH: usize = 500;
/// Most ids in one BatchGetCustomers.
const MAX_BATCH_GET: usize = 1000;

/// The gRPC handlers of the profiles service.
#[derive(Debug, Clone)]
pub struct ProfilesApi {
    ctx: Context,
    tokens: PageTokens,
    peers: Peers,
}

impl ProfilesApi {
    /// Handlers over the use cases of `ctx`, signing page tokens with `tokens`, reaching the
    /// other services (for Customer 360) through `peers`.
    pub fn new(ctx: Context, tokens: PageTokens, peers: Peers) -> Self {
        Self { ctx, tokens, peers }
    }
}

/// The API wrapped for serving, with explicit message size limits.
pub fn server(api: ProfilesApi) -> ProfilesServiceServer<ProfilesApi> {
    ProfilesServiceServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[tonic::async_trait]
impl ProfilesService for ProfilesApi {
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::CreateCustomerResponse>, Status> {
        let caller = Caller::service_of(&request);
        let cmd = NewCustomer::try_from(Called {
            caller,
            now: self.ctx.now(),
            request: request.into_inner(),
        })?;
        let response =
            workflow::customers::create(&self.ctx, cmd, |customer| pb::CreateCustomerResponse {
                customer: Some(customer.into()),
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let id = one_id("customer_id", &request.get_ref().customer_id)?;
        let (customer, merged_from) = workflow::customers::get(&self.ctx, id).await?;
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some((&customer).into()),
            merged_from_customer_id: merged_from.map(|m| m.to_string()).unwrap_or_default(),
        }))
    }

    async fn batch_get_customers(
        &self,
        request: Request<pb::BatchGetCustomersRequest>,
    ) -> Result<Response<pb::BatchGetCustomersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check(
            !req.customer_ids.is_empty() && req.customer_ids.len() <= MAX_BATCH_GET,
            "customer_ids",
            "1 to 1,000 ids",
        );
        let ids: Vec<Uuid> = req
            .customer_ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| parse_id(&mut v, &format!("customer_ids[{i}]"), id))
            .collect();
        invalid(v)?;
        let (found, missing) = workflow::customers::batch_get(&self.ctx, &ids).await?;
        let mut merged = BTreeMap::new();
        // A survivor reached through several ids (its own, merged ones) is listed once.
        let mut listed = HashSet::new();
        let customers = found
            .iter()
            .filter_map(|(c, from)| {
                if let Some(from) = from {
                    merged.insert(from.to_string(), c.id.to_string());
                }
                listed.insert(c.id).then(|| c.into())
            })
            .collect();
        Ok(Response::new(pb::BatchGetCustomersResponse {
            customers,
            missing_customer_ids: missing.iter().map(Uuid::to_string).collect(),
            merged_customer_ids: merged,
        }))
    }

    async fn update_customer(
        &self,
        request: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::UpdateCustomerResponse>, Status> {
        let cmd = CustomerUpdate::try_from(Called {
            caller: Caller::service_of(&request),
            now: self.ctx.now(),
            request: request.into_inner(),
        })?;
        let customer = workflow::customers::update(&self.ctx, cmd).await?;
        Ok(Response::new(pb::UpdateCustomerResponse {
            customer: Some((&customer).into()),
        }))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let filter = customer_filter(&mut v, req.filter.as_ref());
        invalid(v)?;
        let page = self
            .tokens
            .page::<_, Uuid>(&req)
            .map_err(ProfilesError::from)?;
        let mut customers =
            workflow::customers::list(&self.ctx, &filter, page.after, page.limit()).await?;
        let next_page_token = page
            .finish(&mut customers, |c| c.id)
            .map_err(ProfilesError::from)?;
        Ok(Response::new(pb::ListCustomersResponse {
            customers: customers.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeleteCustomerResponse>, Status> {
        let req = request.into_inner();
        let id = one_id("customer_id", &req.customer_id)?;
        let customer = workflow::customers::set_deleted(&self.ctx, id, &req.etag, true).await?;
        Ok(Response::new(pb::DeleteCustomerResponse {
            customer: Some((&customer).into()),
        }))
    }

    async fn undelete_customer(
        &self,
        request: Request<pb::UndeleteCustomerRequest>,
    ) -> Result<Response<pb::UndeleteCustomerResponse>, Status> {
        let req = request.into_inner();
        let id = one_id("customer_id", &req.customer_id)?;
        let customer = workflow::customers::set_deleted(&self.ctx, id, &req.etag, false).await?;
        Ok(Response::new(pb::UndeleteCustomerResponse {
            customer: Some((&customer).into()),
        }))
    }

    async fn lookup_customer(
        &self,
        request: Request<pb::LookupCustomerRequest>,
    ) -> Result<Response<pb::LookupCustomerResponse>, Status> {
        let mut v = Violations::new();
        let identity = identity_from_pb(&mut v, "identity", request.get_ref().identity.as_ref());
        invalid(v)?;
        let identity = ProfilesError::required("identity", identity)?;
        let customer = workflow::customers::lookup(&self.ctx, &identity).await?;
        let stored = customer
            .identities
            .iter()
            .find(|i| i.key() == identity.key())
            .unwrap_or(&identity);
        Ok(Response::new(pb::LookupCustomerResponse {
            customer: Some((&customer).into()),
            identity: Some(stored.into()),
        }))
    }

    async fn add_identity(
        &self,
        request: Request<pb::AddIdentityRequest>,
    ) -> Result<Response<pb::AddIdentityResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        let identity = identity_from_pb(&mut v, "identity", req.identity.as_ref());
        invalid(v)?;
        let id = ProfilesError::required("customer_id", id)?;
        let identity = ProfilesError::required("identity", identity)?;
        let customer =
            workflow::customers::change_identity(&self.ctx, id, &identity, &req.etag, true, false)
                .await?;
        Ok(Response::new(pb::AddIdentityResponse {
            customer: Some((&customer).into()),
        }))
    }

    async fn remove_identity(
        &self,
        request: Request<pb::RemoveIdentityRequest>,
    ) -> Result<Response<pb::RemoveIdentityResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        let identity = identity_from_pb(&mut v, "identity", req.identity.as_ref());
        invalid(v)?;
        let id = ProfilesError::required("customer_id", id)?;
        let identity = ProfilesError::required("identity", identity)?;
        let customer = workflow::customers::change_identity(
            &self.ctx,
            id,
            &identity,
            &req.etag,
            false,
            req.allow_missing,
        )
        .await?;
        Ok(Response::new(pb::RemoveIdentityResponse {
            customer: Some((&customer).into()),
        }))
    }

    async fn create_attribute_definition(
        &self,
        request: Request<pb::CreateAttributeDefinitionRequest>,
    ) -> Result<Response<pb::CreateAttributeDefinitionResponse>, Status> {
        let def = request
            .into_inner()
            .attribute_definition
            .unwrap_or_default();
        let mut v = Violations::new();
        let name_ok = def.attribute_name.len() <= 64
            && def
                .attribute_name
                .starts_with(|c: char| c.is_ascii_lowercase())
            && def
                .attribute_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        v.check(
            name_ok,
            "attribute_definition.attribute_name",
            "must match ^[a-z][a-z0-9_]{0,63}$",
        );
        v.check(
            (1..=4).contains(&def.value_type),
            "attribute_definition.value_type",
            "must be STRING, NUMBER, BOOL or TIME",
        );
        v.check(
            crate::domain::is_plain_text(&def.description, 1000),
            "attribute_definition.description",
            "at most 1,000 characters",
        );
        invalid(v)?;
        let def = AttributeDefinition {
            name: def.attribute_name,
            value_type: i16::try_from(def.value_type).unwrap_or(0),
            description: def.description,
            contains_pii: def.contains_pii,
            create_time: self.ctx.now(),
        };
        let def = workflow::attributes::create(&self.ctx, def).await?;
        Ok(Response::new(pb::CreateAttributeDefinitionResponse {
            attribute_definition: Some((&def).into()),
        }))
    }

    async fn get_attribute_definition(
        &self,
        request: Request<pb::GetAttributeDefinitionRequest>,
    ) -> Result<Response<pb::GetAttributeDefinitionResponse>, Status> {
        let name = request.into_inner().attribute_name;
        if name.is_empty() || name.len() > 64 {
            return Err(ProfilesError::invalid("attribute_name", "must be 1-64 characters").into());
        }
        let def = workflow::attributes::get(&self.ctx, &name).await?;
        Ok(Response::new(pb::GetAttributeDefinitionResponse {
            attribute_definition: Some((&def).into()),
        }))
    }

    async fn list_attribute_definitions(
        &self,
        request: Request<pb::ListAttributeDefinitionsRequest>,
    ) -> Result<Response<pb::ListAttributeDefinitionsResponse>, Status> {
        let req = request.into_inner();
        let page = self
            .tokens
            .page::<_, String>(&req)
            .map_err(ProfilesError::from)?;
        let mut definitions =
            workflow::attributes::list(&self.ctx, page.after.clone(), page.limit()).await?;
        let next_page_token = page
            .finish(&mut definitions, |d| d.name.clone())
            .map_err(ProfilesError::from)?;
        Ok(Response::new(pb::ListAttributeDefinitionsResponse {
            attribute_definitions: definitions.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn create_event_type(
        &self,
        request: Request<pb::CreateEventTypeRequest>,
    ) -> Result<Response<pb::CreateEventTypeResponse>, Status> {
        let event_type = event_type_from_pb(request.into_inner().event_type, self.ctx.now())?;
        let event_type = workflow::event_types::create(&self.ctx, event_type).await?;
        Ok(Response::new(pb::CreateEventTypeResponse {
            event_type: Some((&event_type).into()),
        }))
    }

    async fn get_event_type(
        &self,
        request: Request<pb::GetEventTypeRequest>,
    ) -> Result<Response<pb::GetEventTypeResponse>, Status> {
        let name = request.into_inner().event_type_name;
        if name.is_empty() || name.len() > 64 {
            return Err(
                ProfilesError::invalid("event_type_name", "must be 1-64 characters").into(),
            );
        }
        let event_type = workflow::event_types::get(&self.ctx, &name).await?;
        Ok(Response::new(pb::GetEventTypeResponse {
            event_type: Some((&event_type).into()),
        }))
    }

    async fn list_event_types(
        &self,
        request: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        let req = request.into_inner();
        let page = self
            .tokens
            .page::<_, String>(&req)
            .map_err(ProfilesError::from)?;
        let mut event_types =
            workflow::event_types::list(&self.ctx, page.after.clone(), page.limit()).await?;
        let next_page_token = page
            .finish(&mut event_types, |t| t.name.clone())
            .map_err(ProfilesError::from)?;
        Ok(Response::new(pb::ListEventTypesResponse {
            event_types: event_types.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn add_event_type_properties(
        &self,
        request: Request<pb::AddEventTypePropertiesRequest>,
    ) -> Result<Response<pb::AddEventTypePropertiesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check(
            crate::domain::event_type::is_name(&req.event_type_name),
            "event_type_name",
            "must match ^[a-z][a-z0-9_]{0,63}$",
        );
        v.check(
            !req.properties.is_empty(),
            "properties",
            "at least one property to add",
        );
        let properties = property_definitions_from_pb(&mut v, "properties", &req.properties, false);
        invalid(v)?;
        let event_type =
            workflow::event_types::add_properties(&self.ctx, &req.event_type_name, properties)
                .await?;
        Ok(Response::new(pb::AddEventTypePropertiesResponse {
            event_type: Some((&event_type).into()),
        }))
    }

    async fn update_consent(
        &self,
        request: Request<pb::UpdateConsentRequest>,
    ) -> Result<Response<pb::UpdateConsentResponse>, Status> {
        let caller = Caller::service_of(&request);
        let cmd = ConsentUpdate::try_from(Called {
            caller,
            now: self.ctx.now(),
            request: request.into_inner(),
        })?;
        let response = workflow::consents::update(&self.ctx, cmd, |(customer, changes)| {
            pb::UpdateConsentResponse {
                customer: Some(customer.into()),
                consent_changes: changes.iter().map(Into::into).collect(),
            }
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn list_consent_changes(
        &self,
        request: Request<pb::ListConsentChangesRequest>,
    ) -> Result<Response<pb::ListConsentChangesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer_id = (!req.customer_id.is_empty())
            .then(|| parse_id(&mut v, "customer_id", &req.customer_id))
            .flatten();
        for (i, c) in req.channels.iter().enumerate() {
            v.check(
                (1..=4).contains(c),
                &format!("channels[{i}]"),
                "must be a contact channel",
            );
        }
        let range = parse_range(&mut v, "record_time_range", req.record_time_range.as_ref());
        invalid(v)?;
        let page = self.tokens.page(&req).map_err(ProfilesError::from)?;
        let channels = enum_codes(&req.channels);
        let mut changes = workflow::consents::list_changes(
            &self.ctx,
            customer_id,
            &channels,
            range,
            page.after,
            page.limit(),
        )
        .await?;
        let next_page_token = page
            .finish(&mut changes, change_cursor)
            .map_err(ProfilesError::from)?;
        Ok(Response::new(pb::ListConsentChangesResponse {
            consent_changes: changes.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> Result<Response<pb::RecordActivityResponse>, Status> {
        let activity = crate::domain::activity::NewActivity::try_from(Called {
            caller: Caller::service_of(&request),
            now: self.ctx.now(),
            request: request.into_inner(),
        })?;
        let outcome = workflow::activities::record(&self.ctx, activity).await?;
        Ok(Response::new(pb::RecordActivityResponse {
            activity: Some((&outcome.activity).into()),
            duplicate: outcome.duplicate,
        }))
    }

    async fn import_activities(
        &self,
        request: Request<Streaming<pb::ImportActivitiesRequest>>,
    ) -> Result<Response<pb::ImportActivitiesResponse>, Status> {
        let mut stream = request.into_inner();
        let mut tally = ImportTally::default();
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        let mut index: i64 = 0;
        while let Some(item) = stream.message().await? {
            let now = self.ctx.now();
            match activity_from_pb(item.activity.as_ref(), item.customer_identity.as_ref(), now) {
                Ok(activity) => batch.push(ImportItem { index, activity }),
                Err(violations) => {
                    let activity = item.activity.unwrap_or_default();
                    tally.reject(pb::ImportActivityError {
                        index,
                        source: activity.source,
                        event_id: activity.event_id,
                        reason: pb::ActivityRejectReason::InvalidArgument as i32,
                        field_violations: violations
                            .into_iter()
                            .map(|v| pb::FieldViolation {
                                field: v.field,
                                description: v.description,
                            })
                            .collect(),
                    });
                }
            }
            index += 1;
            if batch.len() >= IMPORT_BATCH {
                tally.flush(&self.ctx, &mut batch).await?;
            }
        }
        tally.flush(&self.ctx, &mut batch).await?;
        tally.response.errors.sort_by_key(|e| e.index);
        tracing::info!(
            accepted = tally.response.accepted_count,
            duplicate = tally.response.duplicate_count,
            rejected = tally.response.rejected_count,
            "activities imported"
        );
        Ok(Response::new(tally.response))
    }

    async fn list_activities(
        &self,
        request: Request<pb::ListActivitiesRequest>,
    ) -> Result<Response<pb::ListActivitiesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        let filter = activity_filter(&mut v, req.filter.as_ref());
        invalid(v)?;
        let page = self.tokens.page(&req).map_err(ProfilesError::from)?;
        let id = ProfilesError::required("customer_id", id)?;
        let mut activities =
            workflow::activities::list(&self.ctx, id, &filter, page.after, page.limit()).await?;
        let next_page_token = page
            .finish(&mut activities, activity_cursor)
            .map_err(ProfilesError::from)?;
        Ok(Response::new(pb::ListActivitiesResponse {
            activities: activities.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn find_duplicate_customers(
        &self,
        request: Request<pb::FindDuplicateCustomersRequest>,
    ) -> Result<Response<pb::FindDuplicateCustomersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        v.check(
            (0..=100).contains(&req.max_candidates),
            "max_candidates",
            "must be 0-100",
        );
        v.check(
            (0.0..=1.0).contains(&req.min_score),
            "min_score",
            "must be 0.0-1.0",
        );
        invalid(v)?;
        let id = ProfilesError::required("customer_id", id)?;
        let max = if req.max_candidates == 0 {
            10
        } else {
            usize::try_from(req.max_candidates).unwrap_or(10)
        };
        let min_score = if req.min_score == 0.0 {
            0.5
        } else {
            req.min_score
        };
        let (asked, found) =
            workflow::privacy::find_duplicates(&self.ctx, id, max, min_score).await?;
        let candidates = found
            .iter()
            .map(|d| pb::DuplicateCandidate {
                customer: Some((&d.customer).into()),
                score: d.score,
                matches: d
                    .matches
                    .iter()
                    .map(|m| pb::DuplicateMatch {
                        rule: m.rule,
                        customer_identity: m
                            .customer_identity
                            .and_then(|i| asked.identities.get(i))
                            .map(Into::into),
                        candidate_identity: m
                            .candidate_identity
                            .and_then(|i| d.customer.identities.get(i))
                            .map(Into::into),
                        field_paths: m.field_paths.clone(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::FindDuplicateCustomersResponse {
            candidates,
        }))
    }

    async fn merge_customers(
        &self,
        request: Request<pb::MergeCustomersRequest>,
    ) -> Result<Response<pb::MergeCustomersResponse>, Status> {
        let caller = Caller::service_of(&request);
        let cmd = MergeCommand::try_from(Called {
            caller,
            now: self.ctx.now(),
            request: request.into_inner(),
        })?;
        let response = workflow::merges::merge(&self.ctx, cmd, |(customer, record)| {
            pb::MergeCustomersResponse {
                customer: Some(customer.into()),
                merge_record: Some(record.into()),
            }
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn unmerge_customer(
        &self,
        request: Request<pb::UnmergeCustomerRequest>,
    ) -> Result<Response<pb::UnmergeCustomerResponse>, Status> {
        let cmd = UnmergeCommand::try_from(Called {
            caller: Caller::service_of(&request),
            now: self.ctx.now(),
            request: request.into_inner(),
        })?;
        let response = workflow::merges::unmerge(&self.ctx, cmd, |(source, target, record)| {
            pb::UnmergeCustomerResponse {
                source_customer: Some(source.into()),
                target_customer: Some(target.into()),
                merge_record: Some(record.into()),
            }
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn list_merges(
        &self,
        request: Request<pb::ListMergesRequest>,
    ) -> Result<Response<pb::ListMergesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer_id = (!req.customer_id.is_empty())
            .then(|| parse_id(&mut v, "customer_id", &req.customer_id))
            .flatten();
        for (i, s) in req.states.iter().enumerate() {
            v.check(
                matches!(s, 1 | 2),
                &format!("states[{i}]"),
                "must be MERGED or UNMERGED",
            );
        }
        let range = parse_range(&mut v, "merge_time_range", req.merge_time_range.as_ref());
        invalid(v)?;
        let page = self.tokens.page(&req).map_err(ProfilesError::from)?;
        let states = enum_codes(&req.states);
        let mut records = workflow::merges::list(
            &self.ctx,
            customer_id,
            &states,
            range,
            page.after,
            page.limit(),
        )
        .await?;
        let next_page_token = page
            .finish(&mut records, merge_cursor)
            .map_err(ProfilesError::from)?;
        Ok(Response::new(pb::ListMergesResponse {
            merge_records: records.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_customer360(
        &self,
        request: Request<pb::GetCustomer360Request>,
    ) -> Result<Response<pb::GetCustomer360Response>, Status> {
        let scopes = request
            .extensions()
            .get::<Caller>()
            .map(|c| c.scopes.clone())
            .unwrap_or_default();
        let call_deadline = peers::grpc_timeout(request.metadata());
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        for (i, s) in req.sections.iter().enumerate() {
            v.check(
                (1..=3).contains(s),
                &format!("sections[{i}]"),
                "must be SEGMENTS, LOYALTY or FEEDBACK",
            );
        }
        let timeout = match &req.section_timeout {
            None => Some(customer360::DEFAULT_SECTION_TIMEOUT),
            Some(d) => std::time::Duration::try_from(*d).ok().filter(|d| {
                (customer360::MIN_SECTION_TIMEOUT..=customer360::MAX_SECTION_TIMEOUT).contains(d)
            }),
        };
        v.check(
            timeout.is_some(),
            "section_timeout",
            "must be between 10 ms and 5 s",
        );
        invalid(v)?;
        // Never wait longer than what remains of the call's own deadline.
        let timeout = timeout.map(|t| peers::within_deadline(t, call_deadline));
        let id = ProfilesError::required("customer_id", id)?;
        let timeout = ProfilesError::required("section_timeout", timeout)?;
        let (customer, merged_from, summary) =
            workflow::customers::get_with_summary(&self.ctx, id).await?;
        // An erased customer has nothing left to fetch elsewhere.
        let sections = if customer.state == crate::domain::CustomerState::Erased {
            vec![0]
        } else {
            req.sections.clone()
        };
        let (segments, loyalty, feedback) = customer360::sections(
            &self.peers,
            &scopes,
            &customer.id.to_string(),
            &sections,
            timeout,
        )
        .await;
        Ok(Response::new(pb::GetCustomer360Response {
            customer: Some((&customer).into()),
            merged_from_customer_id: merged_from.map(|m| m.to_string()).unwrap_or_default(),
            activity_summary: Some(customer360::summary_to_pb(&summary)),
            segments: Some(segments),
            loyalty: Some(loyalty),
            feedback: Some(feedback),
        }))
    }

    async fn export_customer(
        &self,
        request: Request<pb::ExportCustomerRequest>,
    ) -> Result<Response<pb::ExportCustomerResponse>, Status> {
        let call_deadline = peers::grpc_timeout(request.metadata());
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        let timeout = match &req.section_timeout {
            None => Some(export::DEFAULT_SECTION_TIMEOUT),
            Some(d) => std::time::Duration::try_from(*d).ok().filter(|d| {
                (export::MIN_SECTION_TIMEOUT..=export::MAX_SECTION_TIMEOUT).contains(d)
            }),
        };
        v.check(
            timeout.is_some(),
            "section_timeout",
            "must be between 100 ms and 60 s",
        );
        invalid(v)?;
        let id = ProfilesError::required("customer_id", id)?;
        let timeout = ProfilesError::required("section_timeout", timeout)?;
        let export = workflow::privacy::export(&self.ctx, id).await?;
        let mut customer_export = pb::CustomerExport {
            customer: Some((&export.customer).into()),
            attribute_definitions: export.definitions.iter().map(Into::into).collect(),
            consent_changes: export.consent_changes.iter().map(Into::into).collect(),
            activities: export.activities.iter().map(Into::into).collect(),
            event_types: export.event_types.iter().map(Into::into).collect(),
            merges: export.merges.iter().map(Into::into).collect(),
            export_time: Some(ts(export.export_time)),
            ..Default::default()
        };
        let timeout = peers::within_deadline(timeout, call_deadline);
        export::gather(
            &self.peers,
            &export.customer.id.to_string(),
            timeout,
            &mut customer_export,
        )
        .await;
        Ok(Response::new(pb::ExportCustomerResponse {
            customer_export: Some(customer_export),
            merged_from_customer_id: export
                .merged_from
                .map(|m| m.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn erase_customer(
        &self,
        request: Request<pb::EraseCustomerRequest>,
    ) -> Result<Response<pb::EraseCustomerResponse>, Status> {
        let cmd = EraseCommand::try_from(Called {
            caller: Caller::service_of(&request),
            now: self.ctx.now(),
            request: request.into_inner(),
        })?;
        let response = workflow::privacy::erase(&self.ctx, cmd, |(customer, merged)| {
            pb::EraseCustomerResponse {
                customer: Some(customer.into()),
                merged_customer_ids: merged.iter().map(Uuid::to_string).collect(),
            }
        })
        .await?;
        Ok(Response::new(response))
    }
}
