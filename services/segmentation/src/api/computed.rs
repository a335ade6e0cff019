//! Computed trait definitions (transport only): the request checked field by field here
//! (name, description, update mask), the definition against the catalog by
//! `workflow::computed`, which runs each call in one transaction.

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::segmentation::v1::{
    CreateComputedTraitRequest, CreateComputedTraitResponse, DeleteComputedTraitRequest,
    DeleteComputedTraitResponse, GetComputedTraitRequest, GetComputedTraitResponse,
    GetCustomerComputedTraitsRequest, GetCustomerComputedTraitsResponse, ListComputedTraitsRequest,
    ListComputedTraitsResponse, UpdateComputedTraitRequest, UpdateComputedTraitResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use super::parse::{self, check_request_id, parse_customer_id};
use crate::domain::computed::{MAX_DESCRIPTION_CHARS, name_problem};
use crate::error::{Error, field_violations};
use crate::wire::computed::trait_value_to_proto;
use crate::workflow::computed::{self as workflow, DefinitionChange, TraitChange};

/// The paths UpdateComputedTrait accepts in its mask.
const UPDATABLE: [&str; 6] = [
    "description",
    "event_type",
    "aggregate",
    "property",
    "window",
    "where",
];

fn check_name(violations: &mut Violations, field: &str, name: &str) {
    if let Some(problem) = name_problem(name) {
        violations.add(field, problem);
    }
}

fn check_description(violations: &mut Violations, field: &str, description: &str) {
    violations.check(
        description.chars().count() <= MAX_DESCRIPTION_CHARS,
        field,
        &format!("at most {MAX_DESCRIPTION_CHARS} characters"),
    );
}

/// CreateComputedTrait.
pub(super) async fn create_computed_trait(
    api: &SegmentationApi,
    request: Request<CreateComputedTraitRequest>,
) -> Result<Response<CreateComputedTraitResponse>, Status> {
    let caller = Caller::service_of(&request);
    let request = request.into_inner();
    let mut violations = Violations::new();
    check_request_id(&mut violations, "request_id", &request.request_id);
    let Some(wire) = request.computed_trait.clone() else {
        violations.add("computed_trait", "required");
        Error::check(violations)?;
        return Err(Error::invalid("computed_trait", "required").into());
    };
    check_name(&mut violations, "computed_trait.name", &wire.name);
    check_description(
        &mut violations,
        "computed_trait.description",
        &wire.description,
    );
    let key = (!request.request_id.is_empty()).then(|| {
        RequestKey::new(
            &caller,
            request.request_id.clone(),
            "CreateComputedTrait",
            &request,
        )
    });
    let created = workflow::create(
        api.state(),
        &caller,
        key,
        wire,
        field_violations(violations),
    )
    .await?;
    Ok(Response::new(created))
}

/// GetComputedTrait.
pub(super) async fn get_computed_trait(
    api: &SegmentationApi,
    request: Request<GetComputedTraitRequest>,
) -> Result<Response<GetComputedTraitResponse>, Status> {
    let request = request.into_inner();
    let mut violations = Violations::new();
    check_name(&mut violations, "name", &request.name);
    violations.check(
        request.version >= 0,
        "version",
        "must be 0 (current) or a version ≥ 1",
    );
    Error::check(violations)?;
    let computed_trait = workflow::get(api.state(), &request.name, request.version).await?;
    Ok(Response::new(GetComputedTraitResponse {
        computed_trait: Some(computed_trait),
    }))
}

/// ListComputedTraits: ordered by name, keyset the name.
pub(super) async fn list_computed_traits(
    api: &SegmentationApi,
    request: Request<ListComputedTraitsRequest>,
) -> Result<Response<ListComputedTraitsResponse>, Status> {
    let request = request.into_inner();
    let state = api.state();
    let page = parse::page::<_, String>(&state.page_tokens, &request)?;
    let mut rows = workflow::list(state, page.after.as_deref(), page.limit()).await?;
    let next_page_token = page
        .finish(&mut rows, |t| t.name.clone())
        .map_err(Error::internal)?;
    Ok(Response::new(ListComputedTraitsResponse {
        computed_traits: rows,
        next_page_token,
    }))
}

/// UpdateComputedTrait.
pub(super) async fn update_computed_trait(
    api: &SegmentationApi,
    request: Request<UpdateComputedTraitRequest>,
) -> Result<Response<UpdateComputedTraitResponse>, Status> {
    let caller = Caller::service_of(&request);
    let request = request.into_inner();
    let wire = request
        .computed_trait
        .ok_or_else(|| Error::invalid("computed_trait", "required"))?;
    let paths: Vec<String> = request.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut violations = Violations::new();
    check_name(&mut violations, "computed_trait.name", &wire.name);
    if paths.is_empty() {
        violations.add(
            "update_mask",
            format!("required: any of {}", UPDATABLE.join(", ")),
        );
    }
    for path in &paths {
        if !UPDATABLE.contains(&path.as_str()) {
            violations.add(
                "update_mask",
                format!("`{path}` cannot be updated ({})", UPDATABLE.join(", ")),
            );
        }
    }
    let has = |p: &str| paths.iter().any(|x| x == p);
    if has("description") {
        check_description(
            &mut violations,
            "computed_trait.description",
            &wire.description,
        );
    }
    Error::check(violations)?;
    let definition = ["event_type", "aggregate", "property", "window", "where"]
        .iter()
        .any(|p| has(p))
        .then(|| DefinitionChange {
            event_type: has("event_type").then(|| wire.event_type.clone()),
            aggregate: has("aggregate").then_some(wire.aggregate),
            property: has("property").then(|| wire.property.clone()),
            window: has("window").then_some(wire.window),
            filters: has("where").then(|| wire.r#where.clone()),
        });
    let change = TraitChange {
        name: wire.name.clone(),
        etag: wire.etag.clone(),
        description: has("description").then(|| wire.description.clone()),
        definition,
    };
    let updated = workflow::update(api.state(), &caller, change).await?;
    Ok(Response::new(updated))
}

/// GetCustomerComputedTraits.
pub(super) async fn get_customer_computed_traits(
    api: &SegmentationApi,
    request: Request<GetCustomerComputedTraitsRequest>,
) -> Result<Response<GetCustomerComputedTraitsResponse>, Status> {
    let customer_id = parse_customer_id("customer_id", &request.get_ref().customer_id)?;
    let values = workflow::get_customer(api.state(), &customer_id).await?;
    Ok(Response::new(GetCustomerComputedTraitsResponse {
        computed_traits: values.iter().map(trait_value_to_proto).collect(),
    }))
}

/// DeleteComputedTrait.
pub(super) async fn delete_computed_trait(
    api: &SegmentationApi,
    request: Request<DeleteComputedTraitRequest>,
) -> Result<Response<DeleteComputedTraitResponse>, Status> {
    let request = request.into_inner();
    let mut violations = Violations::new();
    check_name(&mut violations, "name", &request.name);
    Error::check(violations)?;
    workflow::delete(api.state(), &request.name, &request.etag).await?;
    Ok(Response::new(DeleteComputedTraitResponse {}))
}
