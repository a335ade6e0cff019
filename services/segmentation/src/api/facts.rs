//! GetCustomerFacts: one customer's facts as rules see them, with the activity aggregates
//! computed from the retained history and how far each feed has been applied.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};
use custops_contracts::custops::common::v1::{ContactChannel, Date, Money};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    GetCustomerFactsRequest, GetCustomerFactsResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use super::parse::parse_customer_id;
use crate::domain::facts::{ActivityKind, AttributeValue, EvalContext, Facts};
use crate::store::facts::{Feed, Positions};
use crate::wire::computed::trait_value_to_proto;
use crate::wire::derived::{lifecycle_to_proto, rfm_to_proto};
use crate::wire::timestamp;
use crate::workflow::facts::{self as workflow, CustomerFacts};

/// GetCustomerFacts.
pub(super) async fn get_customer_facts(
    api: &SegmentationApi,
    request: Request<GetCustomerFactsRequest>,
) -> Result<Response<GetCustomerFactsResponse>, Status> {
    let customer_id = parse_customer_id("customer_id", &request.get_ref().customer_id)?;
    let facts = workflow::get(api.state(), &customer_id).await?;
    Ok(Response::new(GetCustomerFactsResponse {
        facts: Some(customer_facts_to_proto(&customer_id, &facts)),
    }))
}

/// A customer's facts as rules see them, with RFM and lifecycle.
pub(super) fn customer_facts_to_proto(customer_id: &str, f: &CustomerFacts) -> pb::CustomerFacts {
    let mut out = to_proto(&f.facts, &f.ctx, &f.positions);
    out.rfm = Some(rfm_to_proto(customer_id, &f.rfm, &f.currency));
    out.lifecycle = Some(lifecycle_to_proto(&f.lifecycle));
    out.computed_traits = f.computed.iter().map(trait_value_to_proto).collect();
    out
}

fn to_proto(f: &Facts, ctx: &EvalContext, positions: &Positions) -> pb::CustomerFacts {
    let consents = &f.consents;
    let consented_channels = [
        (consents.sms, ContactChannel::Sms),
        (consents.email, ContactChannel::Email),
        (consents.app_push, ContactChannel::AppPush),
        (consents.wechat, ContactChannel::Wechat),
    ]
    .into_iter()
    .filter(|(granted, _)| *granted)
    .map(|(_, channel)| channel as i32)
    .collect();
    pb::CustomerFacts {
        customer_id: f.customer_id.clone(),
        customer_create_time: f.customer_create_time.map(timestamp),
        geo: Some(pb::GeoFacts {
            country: f.country.clone(),
            region: f.region.clone(),
            city: f.city.clone(),
        }),
        demographics: Some(pb::DemographicFacts {
            birth_date: f.birth_date.map(date),
            age: f.birth_date.map(|b| age(b, ctx.today)),
            days_until_birthday: f.birth_date.map(|b| days_until_birthday(b, ctx.today)),
            gender: f.gender.clone(),
            income_band: f.income_band.clone(),
            occupation: f.occupation.clone(),
            education: f.education.clone(),
        }),
        interests: f.interests.clone(),
        lifestyle_tags: f.lifestyle_tags.clone(),
        tags: f.tags.clone(),
        attributes: f
            .attributes
            .iter()
            .map(|(name, value)| (name.clone(), attribute(value)))
            .collect(),
        consented_channels,
        purchases: Some(purchases(f)),
        interactions: Some(interactions(f)),
        loyalty: f
            .loyalty
            .iter()
            .map(|l| pb::LoyaltyFacts {
                loyalty_program_id: l.loyalty_program_id.clone(),
                tier: l.tier.clone(),
                points: l.points,
                qualifying_points: l.qualifying_points,
                enroll_time: l.enroll_time.map(timestamp),
            })
            .collect(),
        feedback: Some(pb::FeedbackFacts {
            last_nps_score: f.feedback.last_nps_score,
            last_nps_category: f.feedback.last_nps_category().to_owned(),
            last_nps_time: f.feedback.last_nps_time.map(timestamp),
            last_csat_score: f.feedback.last_csat_score,
            last_csat_time: f.feedback.last_csat_time.map(timestamp),
            open_ticket_count: f.feedback.open_ticket_count,
        }),
        rfm: None,
        lifecycle: None,
        update_time: Some(timestamp(positions.update_time)),
        computed_traits: Vec::new(),
        source_positions: positions
            .feeds
            .iter()
            .map(|(feed, sequence, occur_time)| pb::FactsSourcePosition {
                source: match feed {
                    Feed::Profiles => pb::FieldSource::Profiles,
                    Feed::Loyalty => pb::FieldSource::Loyalty,
                    Feed::Feedback => pb::FieldSource::Feedback,
                } as i32,
                sequence: *sequence,
                occur_time: occur_time.map(timestamp),
            })
            .collect(),
    }
}

fn date(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

/// Whole years from `birth` to `today`.
fn age(birth: NaiveDate, today: NaiveDate) -> i32 {
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

/// Days until the next birthday, 0 on the day; 29 February is 28 February in other years.
fn days_until_birthday(birth: NaiveDate, today: NaiveDate) -> i32 {
    let in_year = |year: i32| {
        NaiveDate::from_ymd_opt(year, birth.month(), birth.day())
            .or_else(|| NaiveDate::from_ymd_opt(year, 2, 28))
            .unwrap_or(today)
    };
    let this_year = in_year(today.year());
    let next = if this_year >= today {
        this_year
    } else {
        in_year(today.year() + 1)
    };
    (next - today).num_days() as i32
}

fn attribute(value: &AttributeValue) -> pb::Value {
    use pb::value::Kind;
    let kind = match value {
        AttributeValue::String(s) => Kind::StringValue(s.clone()),
        AttributeValue::Integer(i) => Kind::IntegerValue(*i),
        AttributeValue::Double(d) => Kind::DoubleValue(*d),
        AttributeValue::Bool(b) => Kind::BoolValue(*b),
        AttributeValue::Timestamp(t) => Kind::TimestampValue(timestamp(*t)),
        AttributeValue::Date(d) => Kind::DateValue(date(*d)),
    };
    pb::Value { kind: Some(kind) }
}

fn purchases(f: &Facts) -> pb::PurchaseFacts {
    // As the rule fields read them: orders refunded in full left out, amounts net of refunds.
    let bought: Vec<_> = f
        .activities
        .iter()
        .filter(|a| a.counts_as_purchase())
        .collect();
    // Summed in i128: each amount is bounded, but thousands of maximal purchases of one
    // customer pass int64, and a read must answer; the total saturates (the contract says so).
    let mut amounts: BTreeMap<String, i128> = BTreeMap::new();
    for money in bought.iter().filter_map(|a| a.net_amount()) {
        *amounts.entry(money.currency).or_default() += i128::from(money.amount_minor);
    }
    let categories: BTreeSet<&String> = bought.iter().flat_map(|a| &a.categories).collect();
    let channels: BTreeSet<&String> = bought
        .iter()
        .map(|a| &a.channel)
        .filter(|c| !c.is_empty())
        .collect();
    pb::PurchaseFacts {
        purchase_count: bought.len() as i64,
        purchase_amounts: amounts
            .into_iter()
            .map(|(currency, total)| Money {
                amount_minor: i64::try_from(total).unwrap_or(if total < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                }),
                currency,
            })
            .collect(),
        first_purchase_time: bought.iter().map(|a| a.occur_time).min().map(timestamp),
        last_purchase_time: bought.iter().map(|a| a.occur_time).max().map(timestamp),
        categories: categories.into_iter().cloned().collect(),
        channels: channels.into_iter().cloned().collect(),
    }
}

fn interactions(f: &Facts) -> pb::InteractionFacts {
    let mut kinds: BTreeMap<&str, (i64, chrono::DateTime<chrono::Utc>)> = BTreeMap::new();
    for a in &f.activities {
        if let ActivityKind::Interaction(kind) = &a.kind {
            let entry = kinds.entry(kind.as_str()).or_insert((0, a.occur_time));
            entry.0 += 1;
            entry.1 = entry.1.max(a.occur_time);
        }
    }
    pb::InteractionFacts {
        interaction_count: kinds.values().map(|(n, _)| n).sum(),
        last_interaction_time: kinds.values().map(|(_, t)| *t).max().map(timestamp),
        kind_counts: kinds
            .into_iter()
            .map(|(kind, (n, last))| pb::InteractionKindCount {
                interaction_kind: kind.to_owned(),
                interaction_count: n,
                last_interaction_time: Some(timestamp(last)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
    }

    #[test]
    fn age_and_birthday_count_whole_days_in_the_zone() {
        assert_eq!(age(d(1990, 6, 15), d(2026, 6, 14)), 35);
        assert_eq!(age(d(1990, 6, 15), d(2026, 6, 15)), 36);
        assert_eq!(days_until_birthday(d(1990, 6, 15), d(2026, 6, 15)), 0);
        assert_eq!(days_until_birthday(d(1990, 6, 15), d(2026, 6, 16)), 364);
        // 29 February counts as 28 February in 2027.
        assert_eq!(days_until_birthday(d(2000, 2, 29), d(2027, 2, 27)), 1);
    }
}
