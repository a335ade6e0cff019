//! ListFields: the field catalog, filtered by source and name prefix, paged by field name.

use custops_common::error::Violations;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{ListFieldsRequest, ListFieldsResponse};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use super::parse::{both, page};
use crate::domain::catalog::{FieldDef, FieldSource, FilterDimension, ValueType};
use crate::error::Error;
use crate::wire::rules::operator_to_proto;
use crate::workflow::catalog as workflow;

/// Longest `field_prefix` accepted.
const MAX_PREFIX_CHARS: usize = 128;

/// ListFields: by field name, keyset the name.
pub(super) async fn list_fields(
    api: &SegmentationApi,
    request: Request<ListFieldsRequest>,
) -> Result<Response<ListFieldsResponse>, Status> {
    let req = request.into_inner();
    let (page, source) = both(
        page::<_, String>(&api.state().page_tokens, &req),
        fields_filter(&req),
    )?;
    let catalog = workflow::catalog(api.state()).await?;
    let mut fields: Vec<&FieldDef> = catalog
        .fields()
        .filter(|def| {
            source.is_none_or(|s| def.source == s)
                && def.name.starts_with(&req.field_prefix)
                && page.after.as_ref().is_none_or(|after| def.name > *after)
        })
        .take(page.fetch())
        .collect();
    let next_page_token = page
        .finish(&mut fields, |last| last.name.clone())
        .map_err(Error::internal)?;
    Ok(Response::new(ListFieldsResponse {
        fields: fields.into_iter().map(field_to_proto).collect(),
        next_page_token,
    }))
}

/// The source a ListFields request filters on (`None`: every source), its prefix checked.
fn fields_filter(req: &ListFieldsRequest) -> Result<Option<FieldSource>, Error> {
    let mut violations = Violations::new();
    let source = match pb::FieldSource::try_from(req.source) {
        Ok(pb::FieldSource::Unspecified) => None,
        Ok(source) => Some(source_from_proto(source)),
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
    Ok(source)
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
