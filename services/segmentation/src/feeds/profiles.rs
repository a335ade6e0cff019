//! The profiles feed: customer traits, consents, activities and attribute definitions into
//! the facts projection; deletions, merges, unmerges and erasures into memberships.
//!
//! - CustomerDeleted: the customer leaves every segment; its facts are set aside in a tombstone
//!   and come back with CustomerUndeleted.
//! - ActivityRecorded: purchases, refunds and interactions, keyed by activity id. A refund is
//!   kept apart (`customer_refunds`) and reduces the purchase of the same customer, order id
//!   and currency, whenever that purchase arrives (`store::facts::insert_activities`): purchase
//!   aggregates, RFM, lifecycle and predictions read net amounts.
//! - CustomerMerged / CustomerUnmerged: facts move to the target remembering the merge, and
//!   exactly those move back; so do static memberships (`workflow::membership::unmerge_customers`).
//! - CustomerErased: everything under the customer and the ids merged into it is deleted.
//! - Custom events (an ActivityRecorded of a custom event) and EventTypeDefined: see
//!   `custom_events`.

mod custom_events;

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use custops_common::clock::Clock;
use custops_contracts::custops::common::v1::{ContactChannel, Event};
use custops_contracts::custops::profiles::v1 as pb;
use custops_contracts::custops::segmentation::v1::ChangeReason;
use prost::{Message, Name};
use sqlx::PgConnection;

use super::{FactsFeed, Pending, cause, payload, position, settle_now};
use crate::domain::facts::{Activity, ActivityKind, AttributeValue, Consents, Money};
use crate::store::facts::{self, Feed, Merge, NewActivity, NewRefund, Traits};
use crate::wire::from_timestamp;
use crate::workflow::computed;
use crate::workflow::membership::{self, Changed};

/// Applies profiles events to the facts projection.
#[derive(Debug, Clone)]
pub struct ProfilesFeed {
    clock: Arc<dyn Clock>,
}

impl ProfilesFeed {
    /// A handler timing its effects with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

facts_feed_handler!(ProfilesFeed);

#[tonic::async_trait]
impl FactsFeed for ProfilesFeed {
    const FEED: &'static str = "profiles";
    const LOST_ON_RESYNC: &'static str = "customer traits, consents and attribute definitions; purchases, refunds, interactions and custom events (purchase aggregates, RFM, lifecycle, event conditions); deletions, merges, unmerges and erasures (facts and memberships of those customers)";

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let at = position(Feed::Profiles, event);
        let kind = event.event_type.as_str();
        if kind == pb::ActivityRecorded::full_name() {
            let activity = pb::ActivityRecorded::decode(payload(event)?)?.activity;
            if let Some(custom) = activity.as_ref().and_then(custom_events::to_event) {
                return custom_events::store(tx, custom, pending, at, event, now).await;
            }
            let Some(recorded) = activity.and_then(to_recorded) else {
                return Ok(());
            };
            // Older than the retained history (`EvaluationSettings.activity_retention_days`):
            // not kept.
            let retention = pending.settings(&mut *tx).await?.activity_retention_days;
            let kept_since = now - Duration::days(i64::from(retention));
            match recorded {
                Recorded::Activity(new) if new.activity.occur_time >= kept_since => {
                    pending.add_activity(new, at, event, now);
                }
                Recorded::Refund(refund) if refund.occur_time >= kept_since => {
                    pending.add_refund(refund, at, event, now);
                }
                Recorded::Activity(_) | Recorded::Refund(_) => {}
            }
            return Ok(());
        }
        // Every other event sees the activities before it stored.
        pending.store_activities(&mut *tx).await?;
        if kind == pb::CustomerCreated::full_name() {
            let traits = pb::CustomerCreated::decode(payload(event)?)?.traits;
            if let Some(id) = apply_traits(tx, traits, event, now).await? {
                pending.touch(&id, at, event, now, Changed::TRAITS);
            }
            return Ok(());
        }
        if kind == pb::CustomerUpdated::full_name() {
            let traits = pb::CustomerUpdated::decode(payload(event)?)?.traits;
            if let Some(id) = apply_traits(tx, traits, event, now).await? {
                pending.touch(&id, at, event, now, Changed::TRAITS);
            }
            return Ok(());
        }
        if kind == pb::CustomerUndeleted::full_name() {
            let traits = pb::CustomerUndeleted::decode(payload(event)?)?.traits;
            if let Some(t) = &traits {
                facts::restore_customer(&mut *tx, &t.customer_id, now).await?;
            }
            if let Some(id) = apply_traits(tx, traits, event, now).await? {
                // Its facts came back whole: every rule segment may take it again.
                pending.touch(&id, at, event, now, Changed::ALL);
            }
            return Ok(());
        }
        let by_event = cause(event, ChangeReason::Event, now);
        if kind == pb::CustomerDeleted::full_name() {
            pending.settle(&mut *tx).await?;
            let deleted = pb::CustomerDeleted::decode(payload(event)?)?;
            if facts::exists(&mut *tx, &deleted.customer_id).await? {
                facts::delete_customer(&mut *tx, &deleted.customer_id).await?;
                membership::remove_customer(tx, &deleted.customer_id, &by_event).await?;
            }
            return Ok(());
        }
        if kind == pb::ConsentChanged::full_name() {
            let change = pb::ConsentChanged::decode(payload(event)?)?.consent_change;
            let Some(change) = change.filter(|c| !c.superseded) else {
                return Ok(());
            };
            let granted = change.new_status == pb::ConsentStatus::Granted as i32;
            facts::set_consent(
                &mut *tx,
                &change.customer_id,
                channel(change.channel),
                granted,
            )
            .await?;
            pending.touch(&change.customer_id, at, event, now, Changed::TRAITS);
            return Ok(());
        }
        if kind == pb::AttributeDefinitionCreated::full_name() {
            let created = pb::AttributeDefinitionCreated::decode(payload(event)?)?;
            if let Some(d) = created.attribute_definition {
                let value_type = match d.value_type() {
                    pb::AttributeValueType::String => "string",
                    pb::AttributeValueType::Number => "double",
                    pb::AttributeValueType::Bool => "bool",
                    pb::AttributeValueType::Time => "timestamp",
                    pb::AttributeValueType::Unspecified => return Ok(()),
                };
                facts::insert_attribute_definition(
                    tx,
                    &d.attribute_name,
                    value_type,
                    &d.description,
                )
                .await?;
            }
            return Ok(());
        }
        if kind == pb::EventTypeDefined::full_name() {
            let defined = pb::EventTypeDefined::decode(payload(event)?)?;
            return custom_events::define(tx, defined, event.sequence).await;
        }
        if kind == pb::CustomerMerged::full_name() {
            pending.settle(&mut *tx).await?;
            let merged = pb::CustomerMerged::decode(payload(event)?)?;
            let merge = Merge {
                merge_id: merged.merge_id,
                source: merged.source_customer_id,
                target: merged.target_customer_id,
            };
            if merge.source == merge.target || !facts::merge(&mut *tx, &merge).await? {
                return Ok(());
            }
            let by_merge = cause(event, ChangeReason::Merge, now);
            // The source's events went to the target: its computed values go too.
            computed::refresh_customers(&mut *tx, std::slice::from_ref(&merge.source), now).await?;
            apply_or_settle(
                &mut *tx,
                merged.target_traits,
                &merge.target,
                event,
                &by_merge,
            )
            .await?;
            return membership::merge_customers(
                tx,
                &merge.merge_id,
                &merge.source,
                &merge.target,
                &by_merge,
            )
            .await;
        }
        if kind == pb::CustomerUnmerged::full_name() {
            pending.settle(&mut *tx).await?;
            let unmerged = pb::CustomerUnmerged::decode(payload(event)?)?;
            let Some(merge) = facts::unmerge(&mut *tx, &unmerged.merge_id, now).await? else {
                return Ok(());
            };
            let by_merge = cause(event, ChangeReason::Merge, now);
            // Static memberships first, so the re-evaluations below (rule segments, and those
            // referencing the static ones) see them.
            membership::unmerge_customers(
                &mut *tx,
                &merge.merge_id,
                &merge.source,
                &merge.target,
                &by_merge,
            )
            .await?;
            apply_or_settle(
                &mut *tx,
                unmerged.source_traits,
                &merge.source,
                event,
                &by_merge,
            )
            .await?;
            return apply_or_settle(tx, unmerged.target_traits, &merge.target, event, &by_merge)
                .await;
        }
        if kind == pb::CustomerErased::full_name() {
            pending.settle(&mut *tx).await?;
            let erased = pb::CustomerErased::decode(payload(event)?)?;
            let by_erasure = cause(event, ChangeReason::Erasure, now);
            for id in std::iter::once(&erased.customer_id).chain(&erased.merged_customer_ids) {
                if id.is_empty() {
                    continue;
                }
                facts::erase(&mut *tx, id).await?;
                membership::remove_customer(&mut *tx, id, &by_erasure).await?;
            }
            return Ok(());
        }
        Ok(())
    }
}

/// Applies a traits snapshot (unless older than the row's position); the customer to settle,
/// `None` when there is no snapshot.
async fn apply_traits(
    tx: &mut PgConnection,
    traits: Option<pb::CustomerTraits>,
    event: &Event,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let Some(traits) = traits.map(to_traits) else {
        return Ok(None);
    };
    facts::apply_traits(&mut *tx, &traits, event.sequence, now).await?;
    Ok(Some(traits.customer_id))
}

/// Applies `traits` when given, then settles `customer_id` at once (position, derived values,
/// memberships): merges and unmerges settle as they go.
async fn apply_or_settle(
    tx: &mut PgConnection,
    traits: Option<pb::CustomerTraits>,
    customer_id: &str,
    event: &Event,
    cause: &membership::Cause,
) -> anyhow::Result<()> {
    apply_traits(&mut *tx, traits, event, cause.now).await?;
    settle_now(tx, customer_id, position(Feed::Profiles, event), cause).await
}

/// The consent column slug of a channel.
fn channel(channel: i32) -> &'static str {
    match ContactChannel::try_from(channel) {
        Ok(ContactChannel::Sms) => "sms",
        Ok(ContactChannel::Email) => "email",
        Ok(ContactChannel::AppPush) => "app_push",
        Ok(ContactChannel::Wechat) => "wechat",
        Ok(ContactChannel::Unspecified) | Err(_) => "",
    }
}

/// The lower-case value name without its prefix, "" for UNSPECIFIED (`GENDER_FEMALE` →
/// "female").
fn slug(name: &str, prefix: &str) -> String {
    let rest = name.strip_prefix(prefix).unwrap_or(name);
    if rest == "UNSPECIFIED" {
        String::new()
    } else {
        rest.to_ascii_lowercase()
    }
}

fn to_traits(t: pb::CustomerTraits) -> Traits {
    let demographics = t.demographics.unwrap_or_default();
    let geography = t.geography.unwrap_or_default();
    let psychographics = t.psychographics.unwrap_or_default();
    let mut consents = Consents::default();
    for consent in &t.consents {
        let granted = consent.status == pb::ConsentStatus::Granted as i32;
        match channel(consent.channel) {
            "sms" => consents.sms = granted,
            "email" => consents.email = granted,
            "app_push" => consents.app_push = granted,
            "wechat" => consents.wechat = granted,
            _ => {}
        }
    }
    let attributes = t
        .custom_attributes
        .into_iter()
        .filter_map(|(name, value)| {
            use pb::custom_attribute_value::Value;
            let value = match value.value? {
                Value::StringValue(s) => AttributeValue::String(s),
                Value::NumberValue(n) => AttributeValue::Double(n),
                Value::BoolValue(b) => AttributeValue::Bool(b),
                Value::TimeValue(t) => AttributeValue::Timestamp(from_timestamp(Some(&t))?),
            };
            Some((name, value))
        })
        .collect();
    Traits {
        create_time: from_timestamp(t.create_time.as_ref()),
        country: geography.country_code,
        region: geography.region,
        city: geography.city,
        birth_date: demographics.birth_date.and_then(|d| {
            NaiveDate::from_ymd_opt(
                d.year,
                u32::try_from(d.month).ok()?,
                u32::try_from(d.day).ok()?,
            )
        }),
        gender: slug(demographics.gender().as_str_name(), "GENDER_"),
        income_band: slug(demographics.income_band().as_str_name(), "INCOME_BAND_"),
        education: slug(
            demographics.education_level().as_str_name(),
            "EDUCATION_LEVEL_",
        ),
        occupation: demographics.occupation,
        interests: psychographics.interests,
        lifestyle_tags: psychographics.lifestyle_tags,
        tags: t.tags,
        attributes,
        consents,
        customer_id: t.customer_id,
    }
}

/// What an ActivityRecorded leaves in the facts.
enum Recorded {
    Activity(NewActivity),
    Refund(NewRefund),
}

/// A purchase, refund or interaction to keep; `None` for malformed activities (a refund
/// without an order id or a positive amount among them).
fn to_recorded(a: pb::Activity) -> Option<Recorded> {
    use pb::activity::Details;
    let occur_time = from_timestamp(a.occur_time.as_ref())?;
    if a.customer_id.is_empty() || a.activity_id.is_empty() {
        return None;
    }
    let (kind, amount, categories, order_id) = match a.details? {
        Details::Purchase(p) => (
            ActivityKind::Purchase,
            p.amount.map(|m| Money {
                amount_minor: m.amount_minor,
                currency: m.currency,
            }),
            p.categories,
            p.order_id,
        ),
        Details::Refund(r) => {
            // Profiles refuses both; an older feed's zero refund would change nothing, and a
            // negative one must not add to a purchase.
            let amount = r.amount.filter(|m| m.amount_minor > 0)?;
            if r.order_id.is_empty() {
                return None;
            }
            return Some(Recorded::Refund(NewRefund {
                activity_id: a.activity_id,
                customer_id: a.customer_id,
                order_id: r.order_id,
                occur_time,
                amount: Money {
                    amount_minor: amount.amount_minor,
                    currency: amount.currency,
                },
            }));
        }
        Details::Interaction(i) => {
            let kind = match i.interaction_kind() {
                pb::InteractionKind::Other => i.other_kind.clone(),
                other => slug(other.as_str_name(), "INTERACTION_KIND_"),
            };
            if kind.is_empty() || kind == "purchase" {
                return None;
            }
            let categories = if i.category.is_empty() {
                Vec::new()
            } else {
                vec![i.category]
            };
            (
                ActivityKind::Interaction(kind),
                None,
                categories,
                String::new(),
            )
        }
        // Custom events are kept apart (`custom_events`), not as facts.
        Details::CustomEvent(_) => return None,
    };
    Some(Recorded::Activity(NewActivity {
        customer_id: a.customer_id,
        activity: Activity {
            activity_id: a.activity_id,
            kind,
            occur_time,
            amount,
            categories,
            channel: a.channel,
            refunded_minor: 0,
        },
        order_id,
    }))
}
