//! ListFields: the field catalog, filtered by source and name prefix, paged by field name.

use custops_common::error::Violations;
use custops_common::paging;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{ListFieldsRequest, ListFieldsResponse};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use crate::domain::catalog::{FieldDef, FieldSource, FilterDimension, ValueType};
use crate::error::Error;
use crate::wire::rules::operator_to_proto;
use crate::workflow::catalog as workflow;

/// Longest `field_prefix` accepted.
const MAX_PREFIX_CHARS: usize = 128;

/// Where the next page starts: after this field name.
#[derive(Debug, Serialize, Deserialize)]
struct AfterField {
    after: String,
}

/// ListFields.
pub(super) async fn list_fields(
    api: &SegmentationApi,
    request: Request<ListFieldsRequest>,
) -> Result<Response<ListFieldsResponse>, Status> {
    let req = request.into_inner();
    let mut violations = Violations::new();
    let page_size = violations.take(
        paging::PAGE_SIZE_FIELD,
        paging::page_size(req.page_size).map_err(|e| e.message()),
    );
    let source = match pb::FieldSource::try_from(req.source) {
        Ok(pb::FieldSource::Unspecified) => Some(None),
        Ok(source) => Some(Some(source_from_proto(source))),
        Err(_) => {
            violations.add("source", "unknown field source");
            None
        }
    };
    violations.check(
        req.field_prefix.chars().count() <= MAX_PREFIX_CHARS,
        "field_prefix",
        "field_prefix is at most 128 characters",
    );
    Error::check(violations)?;
    let (Some(page_size), Some(source)) = (page_size, source) else {
        return Err(Error::internal(anyhow::anyhow!("validated fields missing")).into());
    };

    // The token is only valid for the same filters.
    let fingerprint = format!("fields|{}|{}", req.source, req.field_prefix);
    let after = if req.page_token.is_empty() {
        None
    } else {
        let cursor: AfterField = api
            .state()
            .page_tokens
            .decode(&fingerprint, &req.page_token)?;
        Some(cursor.after)
    };

    let catalog = workflow::catalog(api.state()).await?;
    let mut matching = catalog.fields().filter(|def| {
        source.is_none_or(|s| def.source == s)
            && def.name.starts_with(&req.field_prefix)
            && after.as_ref().is_none_or(|after| def.name > *after)
    });
    let fields: Vec<&FieldDef> = matching.by_ref().take(page_size).collect();
    let next_page_token = match (matching.next(), fields.last()) {
        (Some(_), Some(last)) => api
            .state()
            .page_tokens
            .encode(
                &fingerprint,
                &AfterField {
                    after: last.name.clone(),
                },
            )
            .map_err(Error::internal)?,
        _ => String::new(),
    };
    Ok(Response::new(ListFieldsResponse {
        fields: fields.into_iter().map(field_to_proto).collect(),
        next_page_token,
    }))
}

fn source_from_proto(source: pb::FieldSource) -> FieldSource {
    match source {
        // Callers map UNSPECIFIED to "every source" first.
        pb::FieldSource::Unspecified | pb::FieldSource::Profiles => FieldSource::Profiles,
        pb::FieldSource::Loyalty => FieldSource::Loyalty,
        pb::FieldSource::Feedback => FieldSource::Feedback,
        pb::FieldSource::Derived => FieldSource::Derived,
    }
}

fn source_to_proto(source: FieldSource) -> pb::FieldSource {
    match source {
        FieldSource::Profiles => pb::FieldSource::Profiles,
        FieldSource::Loyalty => pb::FieldSource::Loyalty,
        FieldSource::Feedback => pb::FieldSource::Feedback,
        FieldSource::Derived => pb::FieldSource::Derived,
    }
}

fn value_type_to_proto(value_type: ValueType) -> pb::ValueType {
    match value_type {
        ValueType::String => pb::ValueType::String,
        ValueType::Integer => pb::ValueType::Integer,
        ValueType::Double => pb::ValueType::Double,
        ValueType::Bool => pb::ValueType::Bool,
        ValueType::Timestamp => pb::ValueType::Timestamp,
        ValueType::Date => pb::ValueType::Date,
        ValueType::Money => pb::ValueType::Money,
        ValueType::Enum => pb::ValueType::Enum,
        ValueType::StringList => pb::ValueType::StringList,
    }
}

fn dimension_to_proto(dimension: FilterDimension) -> pb::FilterDimension {
    match dimension {
        FilterDimension::Category => pb::FilterDimension::Category,
        FilterDimension::Channel => pb::FilterDimension::Channel,
        FilterDimension::InteractionKind => pb::FilterDimension::InteractionKind,
        FilterDimension::LoyaltyProgram => pb::FilterDimension::LoyaltyProgram,
    }
}

fn field_to_proto(def: &FieldDef) -> pb::FieldDefinition {
    pb::FieldDefinition {
        field: def.name.clone(),
        display_name: def.display_name.clone(),
        description: def.description.clone(),
        value_type: value_type_to_proto(def.value_type) as i32,
        operators: def
            .operators
            .iter()
            .map(|op| operator_to_proto(*op) as i32)
            .collect(),
        allowed_values: def.allowed_values.clone(),
        windowed: def.windowed,
        filter_dimensions: def
            .filter_dimensions
            .iter()
            .map(|d| dimension_to_proto(*d) as i32)
            .collect(),
        source: source_to_proto(def.source) as i32,
        time_dependent: def.time_dependent,
    }
}
