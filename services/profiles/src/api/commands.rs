//! Requests → domain commands: each `TryFrom` validates the whole request, collecting every
//! bad field into one `ProfilesError::Invalid` (INVALID_ARGUMENT naming each field), so
//! handlers only convert, call the store and answer.

use chrono::{DateTime, Utc};
use custops_common::error::Violations;
use custops_contracts::custops::profiles::v1 as pb;
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::convert::{
    activity_from_pb, actor_from_pb, consents_from_pb, identity_from_pb, parse_id,
    preferences_from_pb, traits_from_pb,
};
use crate::domain::activity::NewActivity;
use crate::domain::customer::{
    MergeWinner, NOT_UPDATABLE_PATHS, SURVIVORSHIP_PATHS, is_updatable_path,
};
use crate::error::ProfilesError;
use crate::workflow::RequestKey;
use crate::workflow::consents::ConsentUpdate;
use crate::workflow::customers::{CustomerUpdate, NewCustomer};
use crate::workflow::merges::{MergeCommand, UnmergeCommand};
use crate::workflow::privacy::EraseCommand;

/// A request with the authenticated calling service (for commands that record who acted or
/// scope idempotency keys to the caller) and the service clock's time it arrived at (for
/// checks such as "not in the future").
#[derive(Debug)]
pub struct Called<T> {
    /// The calling service (from its token; `anonymous` with auth off).
    pub caller: String,
    /// Now, by the service clock.
    pub now: DateTime<Utc>,
    /// The request.
    pub request: T,
}

/// The request's `request_id`, `None` when it carries none; one that is not 1–128 printable
/// ASCII characters is a violation on `request_id`.
fn request_id<'r>(v: &mut Violations, request_id: &'r str) -> Option<&'r str> {
    if request_id.is_empty() {
        return None;
    }
    v.check(
        crate::domain::is_printable_ascii(request_id, 128),
        "request_id",
        "must be 1-128 printable ASCII characters",
    );
    Some(request_id)
}

/// The idempotency key of `request`, to the RPC `method`, when it carries a `request_id`: the
/// calling service, the id, the RPC and the fingerprint of the request's encoding.
fn request_key(
    v: &mut Violations,
    caller: &str,
    id: &str,
    method: &'static str,
    request: &impl Message,
) -> Option<RequestKey> {
    request_id(v, id).map(|id| RequestKey::new(caller, id, method, request))
}

impl TryFrom<Called<pb::CreateCustomerRequest>> for NewCustomer {
    type Error = ProfilesError;

    fn try_from(called: Called<pb::CreateCustomerRequest>) -> Result<Self, Self::Error> {
        let caller = called.caller.as_str();
        let req = called.request;
        let mut v = Violations::new();
        let customer = req.customer.clone().unwrap_or_default();
        let traits = traits_from_pb(&mut v, "customer.", &customer, called.now);
        v.check(
            customer.identities.len() <= 20,
            "customer.identities",
            "at most 20 identities",
        );
        let mut identities = Vec::new();
        for (i, identity) in customer.identities.iter().enumerate() {
            let field = format!("customer.identities[{i}]");
            if let Some(identity) = identity_from_pb(&mut v, &field, Some(identity)) {
                if identities
                    .iter()
                    .any(|other: &crate::domain::Identity| other.key() == identity.key())
                {
                    v.add(field, "repeats another identity of the request");
                } else {
                    identities.push(identity);
                }
            }
        }
        let consents = consents_from_pb(
            &mut v,
            "customer.consents",
            &customer.consents,
            caller,
            called.now,
        );
        // Fingerprinted over the validated values, not the wire bytes: the output-only fields
        // of the customer a client echoes back (ids, times, etag) must not make a retry a
        // different request.
        let request = request_id(&mut v, &req.request_id).map(|id| RequestKey {
            caller: caller.to_owned(),
            request_id: id.to_owned(),
            method: "CreateCustomer",
            fingerprint: Sha256::digest(format!("{traits:?}|{identities:?}|{consents:?}")).to_vec(),
        });
        ProfilesError::check(v)?;
        let cmd = NewCustomer {
            traits,
            identities,
            consents,
            request,
        };
        Ok(cmd)
    }
}

impl TryFrom<Called<pb::UpdateCustomerRequest>> for CustomerUpdate {
    type Error = ProfilesError;

    fn try_from(called: Called<pb::UpdateCustomerRequest>) -> Result<Self, Self::Error> {
        let req = called.request;
        let mut v = Violations::new();
        let customer = req.customer.unwrap_or_default();
        let id = parse_id(&mut v, "customer.customer_id", &customer.customer_id);
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        v.check(
            !paths.is_empty(),
            "update_mask",
            "name at least one field to update",
        );
        for path in &paths {
            if NOT_UPDATABLE_PATHS.contains(&path.as_str()) {
                v.add(
                    "update_mask",
                    format!("`{path}` cannot be changed by UpdateCustomer"),
                );
            } else if !is_updatable_path(path) {
                v.add(
                    "update_mask",
                    format!("`{path}` is not a field of Customer"),
                );
            }
        }
        let patch = traits_from_pb(&mut v, "customer.", &customer, called.now);
        ProfilesError::check(v)?;
        let customer_id = ProfilesError::required("customer.customer_id", id)?;
        let cmd = CustomerUpdate {
            customer_id,
            etag: customer.etag,
            patch,
            paths,
        };
        Ok(cmd)
    }
}

impl TryFrom<Called<pb::UpdateConsentRequest>> for ConsentUpdate {
    type Error = ProfilesError;

    fn try_from(called: Called<pb::UpdateConsentRequest>) -> Result<Self, Self::Error> {
        let caller = called.caller.as_str();
        let req = called.request;
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        v.check(
            !req.consents.is_empty() || req.channel_preferences.is_some(),
            "consents",
            "give consents, channel_preferences or both",
        );
        v.check(
            req.consents.len() <= 4,
            "consents",
            "at most one decision per channel",
        );
        let decisions = consents_from_pb(&mut v, "consents", &req.consents, caller, called.now);
        let preferences = req
            .channel_preferences
            .as_ref()
            .map(|p| preferences_from_pb(&mut v, "channel_preferences", p));
        let request = request_key(&mut v, caller, &req.request_id, "UpdateConsent", &req);
        ProfilesError::check(v)?;
        let customer_id = ProfilesError::required("customer_id", id)?;
        let cmd = ConsentUpdate {
            customer_id,
            decisions,
            preferences,
            etag: req.etag,
            request,
        };
        Ok(cmd)
    }
}

impl TryFrom<Called<pb::MergeCustomersRequest>> for MergeCommand {
    type Error = ProfilesError;

    fn try_from(called: Called<pb::MergeCustomersRequest>) -> Result<Self, Self::Error> {
        let caller = called.caller.as_str();
        let req = called.request;
        let mut v = Violations::new();
        let source = parse_id(&mut v, "source_customer_id", &req.source_customer_id);
        let target = parse_id(&mut v, "target_customer_id", &req.target_customer_id);
        if source.is_some() && source == target {
            v.add("target_customer_id", "must differ from source_customer_id");
        }
        let mut choices = Vec::new();
        for (i, c) in req.survivorship_choices.iter().enumerate() {
            let path_ok = SURVIVORSHIP_PATHS.contains(&c.field_path.as_str())
                || c.field_path
                    .strip_prefix("custom_attributes.")
                    .is_some_and(|n| !n.is_empty());
            let repeated = choices
                .iter()
                .any(|(p, _): &(String, MergeWinner)| *p == c.field_path);
            v.check(
                path_ok && !repeated,
                &format!("survivorship_choices[{i}].field_path"),
                "a known field path, at most once",
            );
            let winner = match c.winner {
                1 => Some(MergeWinner::Target),
                2 => Some(MergeWinner::Source),
                3 if matches!(
                    c.field_path.as_str(),
                    "tags"
                        | "psychographics.interests"
                        | "psychographics.lifestyle_tags"
                        | "custom_attributes"
                ) =>
                {
                    Some(MergeWinner::Union)
                }
                _ => None,
            };
            v.check(
                winner.is_some(),
                &format!("survivorship_choices[{i}].winner"),
                "TARGET or SOURCE (UNION only for lists and custom_attributes)",
            );
            if let Some(winner) = winner {
                choices.push((c.field_path.clone(), winner));
            }
        }
        v.check(
            crate::domain::is_plain_text(&req.merge_reason, 500),
            "merge_reason",
            "at most 500 characters",
        );
        let actor = actor_from_pb(&mut v, "actor", req.actor.as_ref(), caller);
        let request = request_key(&mut v, caller, &req.request_id, "MergeCustomers", &req);
        ProfilesError::check(v)?;
        let source = ProfilesError::required("source_customer_id", source)?;
        let target = ProfilesError::required("target_customer_id", target)?;
        let cmd = MergeCommand {
            source,
            target,
            choices,
            source_etag: req.source_etag,
            target_etag: req.target_etag,
            actor,
            reason: req.merge_reason,
            validate_only: req.validate_only,
            request,
        };
        Ok(cmd)
    }
}

impl TryFrom<Called<pb::UnmergeCustomerRequest>> for UnmergeCommand {
    type Error = ProfilesError;

    fn try_from(called: Called<pb::UnmergeCustomerRequest>) -> Result<Self, Self::Error> {
        let caller = called.caller.as_str();
        let req = called.request;
        let mut v = Violations::new();
        let merge_id = parse_id(&mut v, "merge_id", &req.merge_id);
        v.check(
            crate::domain::is_plain_text(&req.unmerge_reason, 500),
            "unmerge_reason",
            "at most 500 characters",
        );
        let actor = actor_from_pb(&mut v, "actor", req.actor.as_ref(), caller);
        let request = request_key(&mut v, caller, &req.request_id, "UnmergeCustomer", &req);
        ProfilesError::check(v)?;
        let merge_id = ProfilesError::required("merge_id", merge_id)?;
        Ok(UnmergeCommand {
            merge_id,
            actor,
            reason: req.unmerge_reason,
            request,
        })
    }
}

impl TryFrom<Called<pb::EraseCustomerRequest>> for EraseCommand {
    type Error = ProfilesError;

    fn try_from(called: Called<pb::EraseCustomerRequest>) -> Result<Self, Self::Error> {
        let req = called.request;
        let mut v = Violations::new();
        let id: Option<Uuid> = parse_id(&mut v, "customer_id", &req.customer_id);
        let request = request_key(
            &mut v,
            &called.caller,
            &req.request_id,
            "EraseCustomer",
            &req,
        );
        ProfilesError::check(v)?;
        Ok(EraseCommand {
            customer_id: ProfilesError::required("customer_id", id)?,
            request,
        })
    }
}

impl TryFrom<Called<pb::RecordActivityRequest>> for NewActivity {
    type Error = ProfilesError;

    fn try_from(called: Called<pb::RecordActivityRequest>) -> Result<Self, Self::Error> {
        let req = called.request;
        activity_from_pb(
            req.activity.as_ref(),
            req.customer_identity.as_ref(),
            called.now,
        )
        .map_err(ProfilesError::Invalid)
    }
}
