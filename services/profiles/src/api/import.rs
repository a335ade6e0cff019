//! ImportActivities' tally: items committed a batch at a time through the import use case,
//! counted as accepted, duplicate or rejected (with the first rejections listed).

use custops_contracts::custops::profiles::v1 as pb;
use tonic::Status;

use crate::workflow::activities::{ImportItem, ImportOutcome};
use crate::workflow::{self, Context};

/// Rejected items listed in an import response.
const MAX_IMPORT_ERRORS: usize = 1000;

fn reject_reason(outcome: &ImportOutcome) -> pb::ActivityRejectReason {
    match outcome {
        ImportOutcome::Accepted | ImportOutcome::Duplicate => pb::ActivityRejectReason::Unspecified,
        ImportOutcome::Invalid(_) => pb::ActivityRejectReason::InvalidArgument,
        ImportOutcome::CustomerNotFound => pb::ActivityRejectReason::CustomerNotFound,
        ImportOutcome::CustomerNotActive => pb::ActivityRejectReason::CustomerNotActive,
        ImportOutcome::EventIdReused => pb::ActivityRejectReason::EventIdReused,
    }
}

/// Tallies of an import stream.
#[derive(Default)]
pub(super) struct ImportTally {
    pub(super) response: pb::ImportActivitiesResponse,
}

impl ImportTally {
    pub(super) fn reject(&mut self, error: pb::ImportActivityError) {
        self.response.rejected_count += 1;
        if self.response.errors.len() < MAX_IMPORT_ERRORS {
            self.response.errors.push(error);
        } else {
            self.response.errors_truncated = true;
        }
    }

    pub(super) async fn flush(
        &mut self,
        ctx: &Context,
        batch: &mut Vec<ImportItem>,
    ) -> Result<(), Status> {
        if batch.is_empty() {
            return Ok(());
        }
        let outcomes = workflow::activities::import_batch(ctx, batch).await?;
        for (item, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                ImportOutcome::Accepted => self.response.accepted_count += 1,
                ImportOutcome::Duplicate => self.response.duplicate_count += 1,
                other => self.reject(pb::ImportActivityError {
                    index: item.index,
                    source: item.activity.source.clone(),
                    event_id: item.activity.event_id.clone(),
                    reason: reject_reason(&other) as i32,
                    field_violations: match other {
                        ImportOutcome::Invalid(violations) => violations
                            .into_iter()
                            .map(|v| pb::FieldViolation {
                                field: v.field,
                                description: v.description,
                            })
                            .collect(),
                        _ => Vec::new(),
                    },
                }),
            }
        }
        batch.clear();
        Ok(())
    }
}
