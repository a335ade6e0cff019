//! The facts projection, driven through the public feed handlers with real `Event` envelopes in
//! a transaction (as the consumer runs them): redelivery changes nothing, a merge undone
//! restores both customers, an erasure leaves nothing behind, and consents, attribute
//! definitions, loyalty and feedback events land in the facts GetCustomerFacts returns.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written yuan_fen, e.g. 120_00 = 120.00 CNY"
)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use custops_common::clock::Clock;
use custops_common::consumer::EventHandler;
use custops_contracts::custops::common::v1::{ContactChannel, Date, Event, Money};
use custops_contracts::custops::feedback::v1 as fb;
use custops_contracts::custops::loyalty::v1 as ly;
use custops_contracts::custops::profiles::v1 as pr;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::facts::{AttributeValue, Facts};
use custops_segmentation::feeds::{
    feedback::FeedbackFeed, loyalty::LoyaltyFeed, profiles::ProfilesFeed,
};
use custops_segmentation::store::facts::load_facts;
use custops_segmentation::wire::timestamp;
use prost::{Message, Name};
use sqlx::PgPool;

use crate::helpers::{TestApp, as_of, spawn_app_at};

/// Profiles customer ids (UUIDs), as the reads of facts, RFM, lifecycle and explanations take.
const C1: &str = "0190f6f5-0000-7000-8000-0000000000c1";
const SOURCE: &str = "0190f6f5-0000-7000-8000-00000000005a";
const TARGET: &str = "0190f6f5-0000-7000-8000-00000000007a";
const UNKNOWN: &str = "0190f6f5-0000-7000-8000-0000000000ff";

/// The three handlers over the app's clock.
struct Feeds {
    profiles: ProfilesFeed,
    loyalty: LoyaltyFeed,
    feedback: FeedbackFeed,
}

impl Feeds {
    fn new(app: &TestApp) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
        Self {
            profiles: ProfilesFeed::new(clock.clone()),
            loyalty: LoyaltyFeed::new(clock.clone()),
            feedback: FeedbackFeed::new(clock),
        }
    }

    /// Applies `event` with the handler of its package, in one transaction.
    async fn apply(&self, pool: &PgPool, event: &Event) -> anyhow::Result<()> {
        let mut tx = pool.begin().await?;
        if event.event_type.starts_with("custops.profiles.") {
            self.profiles.handle(&mut tx, event).await?;
        } else if event.event_type.starts_with("custops.loyalty.") {
            self.loyalty.handle(&mut tx, event).await?;
        } else {
            self.feedback.handle(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn apply_all(&self, pool: &PgPool, events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            self.apply(pool, event).await?;
        }
        Ok(())
    }

    /// Applies `events` as the consumer applies one batch: in one transaction, through
    /// `handle_batch` (each run of one feed's events through its handler).
    async fn apply_batch(&self, pool: &PgPool, events: &[Event]) -> anyhow::Result<()> {
        let mut tx = pool.begin().await?;
        for run in events.chunk_by(|a, b| package(a) == package(b)) {
            let handler: &dyn EventHandler = match package(&run[0]) {
                "profiles" => &self.profiles,
                "loyalty" => &self.loyalty,
                _ => &self.feedback,
            };
            handler
                .handle_batch(&mut tx, run)
                .await
                .map_err(|e| e.source.context(format!("event {}", e.index)))?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The package of an event's type: "profiles", "loyalty" or "feedback".
fn package(event: &Event) -> &str {
    event.event_type.split('.').nth(1).unwrap_or_default()
}

/// An envelope for `payload` at feed position `sequence`.
fn event<M: Message + Name>(sequence: i64, aggregate_id: &str, payload: &M) -> Event {
    Event {
        sequence,
        event_id: format!("ev-{}-{sequence}", M::NAME),
        aggregate_type: "customer".into(),
        aggregate_id: aggregate_id.into(),
        event_type: M::full_name(),
        occur_time: Some(timestamp(as_of())),
        payload: Some(prost_types::Any {
            type_url: M::type_url(),
            value: payload.encode_to_vec(),
        }),
        traceparent: String::new(),
    }
}

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(timestamp(t))
}

fn traits(id: &str, city: &str) -> pr::CustomerTraits {
    pr::CustomerTraits {
        customer_id: id.into(),
        state: pr::CustomerState::Active as i32,
        create_time: ts(as_of() - Duration::days(400)),
        demographics: Some(pr::Demographics {
            birth_date: Some(Date {
                year: 1990,
                month: 11,
                day: 25,
            }),
            gender: pr::Gender::Female as i32,
            income_band: pr::IncomeBand::UpperMiddle as i32,
            occupation: "teacher".into(),
            education_level: pr::EducationLevel::Master as i32,
        }),
        geography: Some(pr::Geography {
            country_code: "CN".into(),
            region: "CN-ZJ".into(),
            city: city.into(),
            postal_code: String::new(),
        }),
        psychographics: Some(pr::Psychographics {
            interests: vec!["tea".into()],
            lifestyle_tags: vec!["new_parent".into()],
        }),
        tags: vec!["vip".into()],
        custom_attributes: [(
            "vip_level".to_owned(),
            pr::CustomAttributeValue {
                value: Some(pr::custom_attribute_value::Value::NumberValue(3.0)),
            },
        )]
        .into_iter()
        .collect(),
        consents: vec![pr::Consent {
            channel: ContactChannel::Email as i32,
            status: pr::ConsentStatus::Granted as i32,
            source: "checkout_form".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The traits profiles reports once the history's ConsentChanged (SMS) happened.
fn traits_later(id: &str, city: &str) -> pr::CustomerTraits {
    let mut t = traits(id, city);
    t.consents.push(pr::Consent {
        channel: ContactChannel::Sms as i32,
        status: pr::ConsentStatus::Granted as i32,
        source: "preference_centre".into(),
        ..Default::default()
    });
    t
}

fn purchase(activity_id: &str, customer: &str, days_ago: i64, amount: i64) -> pr::ActivityRecorded {
    pr::ActivityRecorded {
        activity: Some(pr::Activity {
            activity_id: activity_id.into(),
            customer_id: customer.into(),
            source: "orders".into(),
            event_id: activity_id.into(),
            occur_time: ts(as_of() - Duration::days(days_ago)),
            channel: "store".into(),
            details: Some(pr::activity::Details::Purchase(pr::Purchase {
                order_id: activity_id.into(),
                amount: Some(Money {
                    amount_minor: amount,
                    currency: "CNY".into(),
                }),
                categories: vec!["tea".into()],
                item_count: 1,
            })),
            ..Default::default()
        }),
    }
}

fn visit(activity_id: &str, customer: &str, days_ago: i64) -> pr::ActivityRecorded {
    pr::ActivityRecorded {
        activity: Some(pr::Activity {
            activity_id: activity_id.into(),
            customer_id: customer.into(),
            source: "web".into(),
            event_id: activity_id.into(),
            occur_time: ts(as_of() - Duration::days(days_ago)),
            channel: "web".into(),
            details: Some(pr::activity::Details::Interaction(pr::Interaction {
                interaction_kind: pr::InteractionKind::Visit as i32,
                ..Default::default()
            })),
            ..Default::default()
        }),
    }
}

fn member(member_id: &str, customer: &str, tier: &str, points: i64) -> ly::Member {
    ly::Member {
        member_id: member_id.into(),
        program_id: "prog-1".into(),
        customer_id: customer.into(),
        status: ly::MemberStatus::Active as i32,
        balances: Some(ly::PointBalances {
            available_points: points,
            qualifying_points: points * 2,
            ..Default::default()
        }),
        tier: Some(ly::MemberTier {
            tier_code: tier.into(),
            ..Default::default()
        }),
        enrol_time: ts(as_of() - Duration::days(100)),
        ..Default::default()
    }
}

fn nps(customer: &str, score: i32, days_ago: i64) -> fb::ResponseSubmitted {
    fb::ResponseSubmitted {
        response_id: format!("r-{customer}-{days_ago}"),
        customer_id: customer.into(),
        scores: Some(fb::ResponseScores {
            nps_score: Some(score),
            csat_score: Some(4),
            ..Default::default()
        }),
        submit_time: ts(as_of() - Duration::days(days_ago)),
        ..Default::default()
    }
}

fn ticket_opened(ticket: &str, customer: &str) -> fb::TicketOpened {
    fb::TicketOpened {
        ticket_id: ticket.into(),
        customer_id: customer.into(),
        ..Default::default()
    }
}

/// Everything a customer's history on the three feeds makes of it.
fn history(id: &str, seq: i64) -> Vec<Event> {
    vec![
        event(
            seq,
            id,
            &pr::CustomerCreated {
                traits: Some(traits(id, "Hangzhou")),
            },
        ),
        event(seq + 1, id, &purchase(&format!("{id}-p1"), id, 40, 120_00)),
        event(seq + 2, id, &purchase(&format!("{id}-p2"), id, 10, 80_00)),
        event(seq + 3, id, &visit(&format!("{id}-v1"), id, 2)),
        event(
            seq + 4,
            id,
            &pr::ConsentChanged {
                consent_change: Some(pr::ConsentChange {
                    customer_id: id.into(),
                    channel: ContactChannel::Sms as i32,
                    new_status: pr::ConsentStatus::Granted as i32,
                    ..Default::default()
                }),
            },
        ),
        event(
            seq,
            id,
            &ly::MemberEnrolled {
                member: Some(member(&format!("m-{id}"), id, "silver", 100)),
            },
        ),
        event(
            seq + 1,
            id,
            &ly::PointsEarned {
                member: Some(member(&format!("m-{id}"), id, "gold", 500)),
                ledger_entry: None,
            },
        ),
        event(seq, id, &nps(id, 9, 5)),
        event(seq + 1, id, &ticket_opened(&format!("t-{id}"), id)),
    ]
}

async fn facts(pool: &PgPool, id: &str) -> anyhow::Result<Option<Facts>> {
    Ok(load_facts(&mut *pool.acquire().await?, id).await?)
}

async fn count(pool: &PgPool, sql: &str, id: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .fetch_one(pool)
        .await?)
}

#[tokio::test]
async fn events_land_in_facts_and_get_customer_facts() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history(C1, 1)).await?;
    feeds
        .apply(
            &app.pool,
            &event(
                20,
                "vip_level",
                &pr::AttributeDefinitionCreated {
                    attribute_definition: Some(pr::AttributeDefinition {
                        attribute_name: "vip_level".into(),
                        value_type: pr::AttributeValueType::Number as i32,
                        description: "VIP level".into(),
                        ..Default::default()
                    }),
                },
            ),
        )
        .await?;

    let f = facts(&app.pool, C1).await?.unwrap_or_default();
    assert_eq!((f.city.as_str(), f.gender.as_str()), ("Hangzhou", "female"));
    assert_eq!(
        (f.income_band.as_str(), f.education.as_str()),
        ("upper_middle", "master")
    );
    assert_eq!(
        f.attributes.get("vip_level"),
        Some(&AttributeValue::Double(3.0))
    );
    // E-mail from the traits, SMS from ConsentChanged.
    assert!(f.consents.email && f.consents.sms && !f.consents.wechat);
    assert_eq!(f.activities.len(), 3);
    assert_eq!(
        (
            f.loyalty.len(),
            f.loyalty[0].tier.as_str(),
            f.loyalty[0].points
        ),
        (1, "gold", 500)
    );
    assert_eq!(f.loyalty[0].qualifying_points, 1000);
    assert_eq!(
        (f.feedback.last_nps_score, f.feedback.last_csat_score),
        (Some(9), Some(4))
    );
    assert_eq!(f.feedback.open_ticket_count, 1);
    // The purchases made the customer ACTIVE (first 40 days ago, last 10).
    assert_eq!(f.lifecycle.stage, "active");
    let definition: (String, String) = sqlx::query_as(
        "SELECT value_type, description FROM attribute_definitions WHERE name = 'vip_level'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(definition, ("double".to_owned(), "VIP level".to_owned()));
    let tiers: Vec<String> = sqlx::query_scalar("SELECT tier FROM loyalty_tiers ORDER BY tier")
        .fetch_all(&app.pool)
        .await?;
    assert_eq!(tiers, vec!["gold", "silver"]);

    // An older NPS answer does not replace a newer one; resolving the ticket closes it.
    feeds
        .apply(&app.pool, &event(3, C1, &nps(C1, 2, 30)))
        .await?;
    feeds
        .apply(
            &app.pool,
            &event(
                4,
                &format!("t-{C1}"),
                &fb::TicketResolved {
                    ticket_id: format!("t-{C1}"),
                    customer_id: C1.into(),
                    ..Default::default()
                },
            ),
        )
        .await?;

    let got = app
        .client
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: C1.into(),
        })
        .await?
        .into_inner()
        .facts
        .unwrap_or_default();
    let purchases = got.purchases.clone().unwrap_or_default();
    assert_eq!(purchases.purchase_count, 2);
    assert_eq!(
        purchases.purchase_amounts,
        vec![Money {
            amount_minor: 200_00,
            currency: "CNY".into()
        }]
    );
    assert_eq!(
        purchases.first_purchase_time,
        ts(as_of() - Duration::days(40))
    );
    assert_eq!(
        purchases.last_purchase_time,
        ts(as_of() - Duration::days(10))
    );
    assert_eq!(purchases.categories, vec!["tea"]);
    let interactions = got.interactions.clone().unwrap_or_default();
    assert_eq!(interactions.interaction_count, 1);
    assert_eq!(interactions.kind_counts[0].interaction_kind, "visit");
    let feedback = got.feedback.clone().unwrap_or_default();
    assert_eq!(
        (
            feedback.last_nps_score,
            feedback.last_nps_category.as_str(),
            feedback.open_ticket_count
        ),
        (Some(9), "promoter", 0)
    );
    let demographics = got.demographics.clone().unwrap_or_default();
    // Born 1990-11-25, today 2026-11-23: 35, birthday in 2 days.
    assert_eq!(
        (demographics.age, demographics.days_until_birthday),
        (Some(35), Some(2))
    );
    assert_eq!(
        got.consented_channels,
        vec![ContactChannel::Sms as i32, ContactChannel::Email as i32]
    );
    let positions: Vec<(i32, i64)> = got
        .source_positions
        .iter()
        .map(|p| (p.source, p.sequence))
        .collect();
    assert_eq!(
        positions,
        vec![
            (pb::FieldSource::Profiles as i32, 5),
            (pb::FieldSource::Loyalty as i32, 2),
            (pb::FieldSource::Feedback as i32, 4),
        ]
    );
    assert_eq!(
        got.lifecycle.unwrap_or_default().stage(),
        pb::LifecycleStage::Active
    );

    let unknown = app
        .client
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: UNKNOWN.into(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(unknown, Some(tonic::Code::NotFound));
    Ok(())
}

#[tokio::test]
async fn redelivered_events_change_nothing() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    let events = history("c1", 1);
    feeds.apply_all(&app.pool, &events).await?;
    // The service's start-up check of the RFM bounds queues an RFM run once purchases exist,
    // and on a loaded machine it may run after the events above. Check here (one caller
    // decides, under a lock) and let any run finish, so that only the redelivery comes
    // between the two reads.
    custops_segmentation::jobs::scheduler::ensure_rfm_bounds(&app.pool, as_of()).await?;
    let settled = custops_testkit::eventually(std::time::Duration::from_secs(30), || async {
        custops_segmentation::store::jobs::active(&app.pool, &["rfm", "all"])
            .await
            .is_ok_and(|active| !active)
    })
    .await;
    assert!(settled, "the RFM run never finished");
    let before = facts(&app.pool, "c1").await?;
    let outbox = count(
        &app.pool,
        "SELECT count(*) FROM outbox WHERE aggregateid = $1",
        "c1",
    )
    .await?;

    feeds.apply_all(&app.pool, &events).await?;

    assert_eq!(facts(&app.pool, "c1").await?, before);
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM outbox WHERE aggregateid = $1",
            "c1"
        )
        .await?,
        outbox,
        "no new derived-value events"
    );
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM customer_activities WHERE customer_id = $1",
            "c1"
        )
        .await?,
        3
    );
    Ok(())
}

/// Facts without the values derived as of a moment (compared separately).
fn without_derived(f: Option<Facts>) -> Option<Facts> {
    f.map(|mut f| {
        f.rfm = Default::default();
        f.lifecycle = Default::default();
        f
    })
}

#[tokio::test]
async fn unmerge_restores_both_customers() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history("src", 1)).await?;
    feeds.apply_all(&app.pool, &history("tgt", 10)).await?;
    // The source answered NPS later than the target: the merged customer shows its answer.
    feeds
        .apply(&app.pool, &event(30, "src", &nps("src", 3, 1)))
        .await?;
    let source_before = without_derived(facts(&app.pool, "src").await?);
    let target_before = without_derived(facts(&app.pool, "tgt").await?);

    feeds
        .apply(
            &app.pool,
            &event(
                40,
                "tgt",
                &pr::CustomerMerged {
                    merge_id: "merge-1".into(),
                    source_customer_id: "src".into(),
                    target_customer_id: "tgt".into(),
                    merge_time: ts(as_of()),
                    target_traits: Some(traits_later("tgt", "Hangzhou")),
                    moved_activity_count: 3,
                },
            ),
        )
        .await?;

    assert_eq!(facts(&app.pool, "src").await?, None, "the source is gone");
    let merged = facts(&app.pool, "tgt").await?.unwrap_or_default();
    assert_eq!(merged.activities.len(), 6);
    assert_eq!(merged.feedback.last_nps_score, Some(3));
    assert_eq!(merged.feedback.open_ticket_count, 2);
    // Both were members of the same program: the target keeps its own membership.
    assert_eq!(merged.loyalty.len(), 1);

    // A purchase on the target after the merge stays with the target.
    feeds
        .apply(
            &app.pool,
            &event(41, "tgt", &purchase("late", "tgt", 1, 5_00)),
        )
        .await?;
    feeds
        .apply(
            &app.pool,
            &event(
                42,
                "tgt",
                &pr::CustomerUnmerged {
                    merge_id: "merge-1".into(),
                    source_customer_id: "src".into(),
                    target_customer_id: "tgt".into(),
                    unmerge_time: ts(as_of()),
                    source_traits: Some(traits_later("src", "Hangzhou")),
                    target_traits: Some(traits_later("tgt", "Hangzhou")),
                    moved_activity_count: 3,
                },
            ),
        )
        .await?;

    assert_eq!(
        without_derived(facts(&app.pool, "src").await?),
        source_before
    );
    let mut target = without_derived(facts(&app.pool, "tgt").await?).unwrap_or_default();
    assert!(target.activities.iter().any(|a| a.activity_id == "late"));
    target.activities.retain(|a| a.activity_id != "late");
    assert_eq!(Some(target), target_before);
    assert_eq!(
        facts(&app.pool, "src").await?.map(|f| f.lifecycle.stage),
        Some("active".to_owned())
    );
    Ok(())
}

#[tokio::test]
async fn erasure_removes_everything_about_the_customer_and_merged_ids() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history("old", 1)).await?;
    feeds.apply_all(&app.pool, &history("kept", 10)).await?;
    feeds
        .apply(
            &app.pool,
            &event(
                40,
                "kept",
                &pr::CustomerMerged {
                    merge_id: "merge-1".into(),
                    source_customer_id: "old".into(),
                    target_customer_id: "kept".into(),
                    target_traits: Some(traits_later("kept", "Ningbo")),
                    ..Default::default()
                },
            ),
        )
        .await?;
    feeds.apply_all(&app.pool, &history("other", 50)).await?;

    feeds
        .apply(
            &app.pool,
            &event(
                60,
                "kept",
                &pr::CustomerErased {
                    customer_id: "kept".into(),
                    erase_time: ts(as_of()),
                    merged_customer_ids: vec!["old".into()],
                },
            ),
        )
        .await?;
    // A late feedback event about the erased customer does not bring it back.
    feeds
        .apply(&app.pool, &event(70, "kept", &nps("kept", 10, 0)))
        .await?;

    for id in ["kept", "old"] {
        for table in [
            "customer_facts",
            "customer_activities",
            "customer_refunds",
            "loyalty_memberships",
            "customer_tickets",
        ] {
            let sql = format!(
                "SELECT count(*) FROM {table} WHERE customer_id = $1 \
                 OR to_jsonb({table})::text LIKE '%\"' || $1 || '\"%'"
            );
            assert_eq!(count(&app.pool, &sql, id).await?, 0, "{id} in {table}");
        }
        let merges = count(
            &app.pool,
            "SELECT count(*) FROM customer_merges WHERE source_id = $1 OR target_id = $1",
            id,
        )
        .await?;
        assert_eq!(merges, 0, "merge snapshots of {id}");
    }
    assert!(
        facts(&app.pool, "other").await?.is_some(),
        "others untouched"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_customer_has_no_facts_until_undeleted() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history("c1", 1)).await?;
    let before = without_derived(facts(&app.pool, "c1").await?);

    feeds
        .apply(
            &app.pool,
            &event(
                10,
                "c1",
                &pr::CustomerDeleted {
                    customer_id: "c1".into(),
                    delete_time: ts(as_of()),
                },
            ),
        )
        .await?;
    assert_eq!(facts(&app.pool, "c1").await?, None);
    // Loyalty news about the deleted customer does not recreate its row.
    feeds
        .apply(
            &app.pool,
            &event(
                5,
                "c1",
                &ly::PointsEarned {
                    member: Some(member("m-c1", "c1", "gold", 600)),
                    ledger_entry: None,
                },
            ),
        )
        .await?;
    assert_eq!(facts(&app.pool, "c1").await?, None);

    feeds
        .apply(
            &app.pool,
            &event(
                11,
                "c1",
                &pr::CustomerUndeleted {
                    traits: Some(traits_later("c1", "Hangzhou")),
                },
            ),
        )
        .await?;
    let mut back = without_derived(facts(&app.pool, "c1").await?).unwrap_or_default();
    assert_eq!(
        back.loyalty[0].points, 600,
        "the loyalty news kept meanwhile"
    );
    back.loyalty[0].points = 500;
    back.loyalty[0].qualifying_points = 1000;
    assert_eq!(Some(back), before);
    Ok(())
}

// ---------- through the gRPC API ----------

type Client = custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient<tonic::transport::Channel>;

/// A static segment holding `members`.
async fn static_segment(
    client: &mut Client,
    name: &str,
    members: &[&str],
) -> anyhow::Result<String> {
    let segment = client
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: name.into(),
                kind: pb::SegmentKind::Static.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .segment
        .unwrap_or_default();
    client
        .upload_static_members(tokio_stream::iter(vec![pb::UploadStaticMembersRequest {
            segment_id: segment.segment_id.clone(),
            mode: pb::StaticUploadMode::Add.into(),
            customer_ids: members.iter().map(|m| (*m).to_owned()).collect(),
            ..Default::default()
        }]))
        .await?;
    Ok(segment.segment_id)
}

/// A rule segment, once its first recompute has succeeded.
async fn rule_segment(
    client: &mut Client,
    name: &str,
    rule: pb::Condition,
) -> anyhow::Result<String> {
    let created = client
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: name.into(),
                kind: pb::SegmentKind::Rule.into(),
                rule: Some(rule),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    for _ in 0..600 {
        let job = client
            .get_recompute_job(pb::GetRecomputeJobRequest {
                recompute_job_id: created.recompute_job_id.clone(),
            })
            .await?
            .into_inner()
            .job
            .unwrap_or_default();
        if job.state == i32::from(pb::RecomputeJobState::Succeeded) {
            return Ok(created.segment.unwrap_or_default().segment_id);
        }
        anyhow::ensure!(
            job.state != i32::from(pb::RecomputeJobState::Failed),
            "job failed: {job:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("the first recompute of {name} did not end")
}

fn predicate(field: &str, operator: pb::Operator, value: pb::value::Kind) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Predicate(pb::Predicate {
            field: field.into(),
            operator: operator.into(),
            values: vec![pb::Value { kind: Some(value) }],
            ..Default::default()
        })),
    }
}

fn member_of(segment_id: &str) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Segment(pb::SegmentReference {
            segment_id: segment_id.into(),
        })),
    }
}

/// The ids of a customer's segments (FULL view, read from Postgres), sorted.
async fn segments_of(client: &mut Client, customer: &str) -> anyhow::Result<Vec<String>> {
    Ok(client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer_id: customer.into(),
            view: pb::CustomerSegmentsView::Full.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .segment_ids)
}

/// The code of a failed call, `None` when it answered.
fn code_of<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Option<tonic::Code> {
    result.err().map(|s| s.code())
}

/// The fields an INVALID_ARGUMENT names; `["<answered>"]` when the call answered.
fn bad_fields<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Vec<String> {
    use tonic_types::StatusExt;
    match result {
        Ok(_) => vec!["<answered>".to_owned()],
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            status
                .get_details_bad_request()
                .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                .unwrap_or_default()
        }
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Static memberships a merge passed to the target go back with the unmerge (once): the
/// source regains its own, the target keeps only what it had before; rule memberships and
/// segments referencing a static one follow. Erasing the source afterwards leaves nothing of
/// it anywhere, and the target exactly its own memberships.
#[tokio::test]
async fn unmerge_gives_static_memberships_back_and_erasure_leaves_nothing() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history(SOURCE, 1)).await?;
    feeds.apply_all(&app.pool, &history(TARGET, 10)).await?;
    let client = &mut app.client;
    let only_source = static_segment(client, "A: source's", &[SOURCE]).await?;
    let both = static_segment(client, "B: both", &[SOURCE, TARGET]).await?;
    let only_target = static_segment(client, "C: target's", &[TARGET]).await?;
    // Each customer has 2 purchases; merged, the target has 4.
    let buyers = rule_segment(
        client,
        "R: 3+ purchases",
        predicate(
            "purchase.count",
            pb::Operator::GreaterOrEqual,
            pb::value::Kind::IntegerValue(3),
        ),
    )
    .await?;
    let via_a = rule_segment(client, "D: in A", member_of(&only_source)).await?;
    let source_before = sorted(vec![only_source.clone(), both.clone(), via_a.clone()]);
    let target_before = sorted(vec![both.clone(), only_target.clone()]);
    assert_eq!(segments_of(client, SOURCE).await?, source_before);
    assert_eq!(segments_of(client, TARGET).await?, target_before);

    let merged = pr::CustomerMerged {
        merge_id: "merge-1".into(),
        source_customer_id: SOURCE.into(),
        target_customer_id: TARGET.into(),
        merge_time: ts(as_of()),
        target_traits: Some(traits_later(TARGET, "Hangzhou")),
        moved_activity_count: 3,
    };
    feeds.apply(&app.pool, &event(40, TARGET, &merged)).await?;
    let client = &mut app.client;
    assert!(segments_of(client, SOURCE).await?.is_empty());
    assert_eq!(
        segments_of(client, TARGET).await?,
        sorted(vec![
            only_source.clone(),
            both.clone(),
            only_target.clone(),
            buyers.clone(),
            via_a.clone()
        ])
    );

    // An hour later, the merge is undone.
    app.clock.advance(Duration::hours(1));
    let later = as_of() + Duration::hours(1);
    let unmerged = pr::CustomerUnmerged {
        merge_id: "merge-1".into(),
        source_customer_id: SOURCE.into(),
        target_customer_id: TARGET.into(),
        unmerge_time: ts(as_of()),
        source_traits: Some(traits_later(SOURCE, "Hangzhou")),
        target_traits: Some(traits_later(TARGET, "Hangzhou")),
        moved_activity_count: 3,
    };
    feeds
        .apply(&app.pool, &event(41, TARGET, &unmerged))
        .await?;
    // Redelivered: applied once only.
    feeds
        .apply(&app.pool, &event(41, TARGET, &unmerged))
        .await?;
    let client = &mut app.client;
    assert_eq!(segments_of(client, SOURCE).await?, source_before);
    assert_eq!(segments_of(client, TARGET).await?, target_before);
    let full = client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer_id: SOURCE.into(),
            view: pb::CustomerSegmentsView::Full.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        full.memberships.iter().all(|m| m.enter_time == ts(later)),
        "memberships regained at the unmerge: {full:?}"
    );
    let exits: Vec<(String, String, i32)> = sqlx::query_scalar::<_, Vec<u8>>(
        "SELECT payload FROM outbox WHERE type = 'custops.segmentation.v1.SegmentExited' \
         ORDER BY appended_at, id",
    )
    .fetch_all(&app.pool)
    .await?
    .iter()
    .map(|b| pb::SegmentExited::decode(b.as_slice()))
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .filter(|e| e.customer_id == TARGET)
    .map(|e| (e.segment_id, e.customer_id, e.reason))
    .collect();
    let merge = i32::from(pb::ChangeReason::Merge);
    assert_eq!(
        sorted(exits.iter().map(|e| e.0.clone()).collect()),
        sorted(vec![only_source.clone(), buyers.clone(), via_a.clone()]),
        "the target left what the merge gave it"
    );
    assert!(exits.iter().all(|e| e.2 == merge));

    feeds
        .apply(
            &app.pool,
            &event(
                50,
                SOURCE,
                &pr::CustomerErased {
                    customer_id: SOURCE.into(),
                    erase_time: ts(as_of()),
                    merged_customer_ids: Vec::new(),
                },
            ),
        )
        .await?;
    let client = &mut app.client;
    assert!(segments_of(client, SOURCE).await?.is_empty());
    assert_eq!(segments_of(client, TARGET).await?, target_before);
    let facts_code = code_of(
        client
            .get_customer_facts(pb::GetCustomerFactsRequest {
                customer_id: SOURCE.into(),
            })
            .await,
    );
    let rfm_code = code_of(
        client
            .get_customer_rfm(pb::GetCustomerRfmRequest {
                customer_id: SOURCE.into(),
            })
            .await,
    );
    let lifecycle_code = code_of(
        client
            .get_customer_lifecycle(pb::GetCustomerLifecycleRequest {
                customer_id: SOURCE.into(),
            })
            .await,
    );
    let not_found = Some(tonic::Code::NotFound);
    assert_eq!(
        (facts_code, rfm_code, lifecycle_code),
        (not_found, not_found, not_found)
    );
    let export = client
        .export_customer_data(pb::ExportCustomerDataRequest {
            customer_id: SOURCE.into(),
        })
        .await?
        .into_inner()
        .customer_data_export
        .unwrap_or_default();
    assert_eq!(
        export,
        pb::CustomerDataExport {
            customer_id: SOURCE.into(),
            export_time: ts(later),
            ..Default::default()
        }
    );
    for table in [
        "customer_facts",
        "customer_activities",
        "customer_refunds",
        "loyalty_memberships",
        "customer_tickets",
        "memberships",
    ] {
        let sql = format!(
            "SELECT count(*) FROM {table} WHERE customer_id = $1 \
             OR to_jsonb({table})::text LIKE '%' || $1 || '%'"
        );
        assert_eq!(
            count(&app.pool, &sql, SOURCE).await?,
            0,
            "{SOURCE} in {table}"
        );
    }
    let merge_rows = count(
        &app.pool,
        "SELECT (SELECT count(*) FROM customer_merges WHERE source_id = $1 OR target_id = $1) \
              + (SELECT count(*) FROM merge_static_memberships)",
        SOURCE,
    )
    .await?;
    assert_eq!(merge_rows, 0, "merge records of {SOURCE}");
    // Member counts agree with what is left.
    for (segment, members) in [
        (&only_source, 0),
        (&both, 1),
        (&only_target, 1),
        (&buyers, 0),
        (&via_a, 0),
    ] {
        let size = app
            .client
            .get_segment_size(pb::GetSegmentSizeRequest {
                segment_id: segment.clone(),
            })
            .await?
            .into_inner()
            .member_count;
        assert_eq!(size, members, "size of {segment}");
    }
    Ok(())
}

/// Reads that answer NOT_FOUND for an unknown customer take profiles ids only: anything not a
/// UUID is INVALID_ARGUMENT naming the field; lookups still take any id (no segments).
#[tokio::test]
async fn customer_ids_that_are_not_uuids_are_invalid_arguments() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history(C1, 1)).await?;
    let segment = static_segment(&mut app.client, "Some", &[C1]).await?;
    let client = &mut app.client;
    let customer_id = vec!["customer_id".to_owned()];
    for bad in ["c1", "nobody", "0190f6f5-0000-7000-8000", ""] {
        let id = bad.to_owned();
        assert_eq!(
            bad_fields(
                client
                    .get_customer_facts(pb::GetCustomerFactsRequest {
                        customer_id: id.clone()
                    })
                    .await
            ),
            customer_id,
            "GetCustomerFacts {bad:?}"
        );
        assert_eq!(
            bad_fields(
                client
                    .get_customer_rfm(pb::GetCustomerRfmRequest {
                        customer_id: id.clone()
                    })
                    .await
            ),
            customer_id,
            "GetCustomerRfm {bad:?}"
        );
        assert_eq!(
            bad_fields(
                client
                    .get_customer_lifecycle(pb::GetCustomerLifecycleRequest {
                        customer_id: id.clone()
                    })
                    .await
            ),
            customer_id,
            "GetCustomerLifecycle {bad:?}"
        );
        assert_eq!(
            bad_fields(
                client
                    .explain_membership(pb::ExplainMembershipRequest {
                        segment_id: segment.clone(),
                        customer_id: id.clone(),
                    })
                    .await
            ),
            customer_id,
            "ExplainMembership {bad:?}"
        );
        assert_eq!(
            bad_fields(
                client
                    .export_customer_data(pb::ExportCustomerDataRequest {
                        customer_id: id.clone()
                    })
                    .await
            ),
            customer_id,
            "ExportCustomerData {bad:?}"
        );
    }
    // Both ids of ExplainMembership bad: both named.
    assert_eq!(
        bad_fields(
            client
                .explain_membership(pb::ExplainMembershipRequest {
                    segment_id: "s1".into(),
                    customer_id: "c1".into(),
                })
                .await
        ),
        vec!["segment_id".to_owned(), "customer_id".to_owned()]
    );
    // A well-formed id segmentation never saw is NOT_FOUND (export: empty), as before.
    let unknown = client
        .get_customer_rfm(pb::GetCustomerRfmRequest {
            customer_id: UNKNOWN.into(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(unknown, Some(tonic::Code::NotFound));
    // Other spellings of the same UUID find the customer.
    let upper = client
        .get_customer_lifecycle(pb::GetCustomerLifecycleRequest {
            customer_id: C1.to_uppercase(),
        })
        .await?
        .into_inner()
        .lifecycle
        .unwrap_or_default();
    assert_eq!(upper.customer_id, C1);
    let explained = client
        .explain_membership(pb::ExplainMembershipRequest {
            segment_id: segment.clone(),
            customer_id: format!("{{{C1}}}"),
        })
        .await?
        .into_inner();
    assert!(explained.member && explained.rule_result);
    // Lookups keep taking any printable id: an id never seen has no segments.
    let looked_up = client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer_id: "nobody".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(looked_up.segment_ids.is_empty());
    Ok(())
}

/// ExportCustomerData: the facts, memberships (FULL view), RFM and lifecycle the other reads
/// return, in one answer; a merged-away or unknown customer's export holds only its id and time.
#[tokio::test]
async fn the_export_holds_facts_memberships_rfm_and_lifecycle() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history(C1, 1)).await?;
    feeds.apply_all(&app.pool, &history(SOURCE, 20)).await?;
    // Events score RFM with stored bounds only: the run the scheduler queues once purchases
    // exist stores them.
    let mut tx = app.pool.begin().await?;
    custops_segmentation::workflow::derived::run_rfm(&mut tx, as_of()).await?;
    tx.commit().await?;
    let client = &mut app.client;
    let listed = static_segment(client, "Listed", &[C1]).await?;
    let hangzhou = rule_segment(
        client,
        "Hangzhou",
        predicate(
            "geo.city",
            pb::Operator::Equals,
            pb::value::Kind::StringValue("Hangzhou".into()),
        ),
    )
    .await?;

    let export = client
        .export_customer_data(pb::ExportCustomerDataRequest {
            customer_id: C1.into(),
        })
        .await?
        .into_inner()
        .customer_data_export
        .unwrap_or_default();
    let facts = client
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: C1.into(),
        })
        .await?
        .into_inner()
        .facts;
    let memberships = client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer_id: C1.into(),
            view: pb::CustomerSegmentsView::Full.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .memberships;
    let rfm = client
        .get_customer_rfm(pb::GetCustomerRfmRequest {
            customer_id: C1.into(),
        })
        .await?
        .into_inner()
        .rfm;
    let lifecycle = client
        .get_customer_lifecycle(pb::GetCustomerLifecycleRequest {
            customer_id: C1.into(),
        })
        .await?
        .into_inner()
        .lifecycle;
    assert_eq!(export.customer_id, C1);
    assert_eq!(export.export_time, ts(as_of()));
    assert!(facts.as_ref().is_some_and(|f| f.purchases.is_some()));
    assert_eq!(export.facts, facts);
    assert_eq!(
        sorted(
            export
                .memberships
                .iter()
                .map(|m| m.segment_id.clone())
                .collect()
        ),
        sorted(vec![listed, hangzhou])
    );
    assert_eq!(export.memberships, memberships);
    assert!(rfm.as_ref().is_some_and(|r| r.scored));
    assert_eq!(export.rfm, rfm);
    assert_eq!(export.lifecycle, lifecycle);
    assert_eq!(
        export.facts.and_then(|f| f.rfm),
        rfm,
        "the facts' RFM is the same"
    );

    // Merged away: its data is held (and exported) under the survivor.
    feeds
        .apply(
            &app.pool,
            &event(
                40,
                C1,
                &pr::CustomerMerged {
                    merge_id: "merge-x".into(),
                    source_customer_id: SOURCE.into(),
                    target_customer_id: C1.into(),
                    target_traits: Some(traits_later(C1, "Hangzhou")),
                    ..Default::default()
                },
            ),
        )
        .await?;
    for id in [SOURCE, UNKNOWN] {
        let empty = app
            .client
            .export_customer_data(pb::ExportCustomerDataRequest {
                customer_id: id.into(),
            })
            .await?
            .into_inner()
            .customer_data_export
            .unwrap_or_default();
        assert_eq!(
            empty,
            pb::CustomerDataExport {
                customer_id: id.into(),
                export_time: ts(as_of()),
                ..Default::default()
            },
            "export of {id}"
        );
    }
    let survivor = app
        .client
        .export_customer_data(pb::ExportCustomerDataRequest {
            customer_id: C1.into(),
        })
        .await?
        .into_inner()
        .customer_data_export
        .unwrap_or_default();
    let purchases = survivor
        .facts
        .and_then(|f| f.purchases)
        .unwrap_or_default()
        .purchase_count;
    assert_eq!(
        purchases, 4,
        "the source's purchases are exported under the survivor"
    );
    Ok(())
}

#[tokio::test]
async fn a_late_feedback_event_racing_an_erasure_never_brings_the_customer_back()
-> anyhow::Result<()> {
    // Arrange: C1 known, then its erasure applied in a transaction left open, the way the
    // profiles consumer holds it while the feedback consumer applies a late ticket event.
    let app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history(C1, 1)).await?;
    let mut erasure = app.pool.begin().await?;
    feeds
        .profiles
        .handle(
            &mut erasure,
            &event(
                60,
                C1,
                &pr::CustomerErased {
                    customer_id: C1.into(),
                    erase_time: ts(as_of()),
                    merged_customer_ids: Vec::new(),
                },
            ),
        )
        .await?;

    // Act: the ticket event is applied while the erasure is in flight, then the erasure
    // commits.
    let late = {
        let pool = app.pool.clone();
        let feedback = feeds.feedback.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await?;
            feedback
                .handle(&mut tx, &event(71, C1, &ticket_opened("late-ticket", C1)))
                .await?;
            tx.commit().await?;
            anyhow::Ok(())
        })
    };
    // The erasure commits once the late event waits for its lock (nothing else in this test's
    // database can be waiting for a lock).
    let waiting = crate::helpers::eventually(std::time::Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap_or(false)
    })
    .await;
    assert!(waiting, "the late event never waited for the erasure");
    erasure.commit().await?;
    late.await??;

    // Assert: no facts row and no ticket of C1 behind its tombstone.
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM customer_facts WHERE customer_id = $1) \
              + (SELECT count(*) FROM customer_tickets WHERE customer_id = $1)",
    )
    .bind(C1)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(rows, 0, "the erased customer came back");
    Ok(())
}

#[tokio::test]
async fn purchase_totals_past_int64_saturate_and_every_read_still_answers() -> anyhow::Result<()> {
    // Issue 14, point 5. Profiles bounds each amount to 10^15 now, but a customer's total of
    // many purchases (or amounts an older profiles accepted) can pass int64: the reads and
    // the evaluators must answer, not overflow.
    let mut app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    feeds.apply_all(&app.pool, &history(C1, 1)).await?;
    for (i, days_ago) in [(30, 3), (31, 4)] {
        let id = format!("{C1}-max-{i}");
        feeds
            .apply(
                &app.pool,
                &event(i, C1, &purchase(&id, C1, days_ago, i64::MAX)),
            )
            .await?;
    }
    let client = &mut app.client;
    let facts = client
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: C1.to_owned(),
        })
        .await?
        .into_inner()
        .facts
        .and_then(|f| f.purchases)
        .unwrap_or_default();
    assert_eq!(facts.purchase_count, 4);
    assert_eq!(
        facts
            .purchase_amounts
            .iter()
            .map(|m| (m.currency.as_str(), m.amount_minor))
            .collect::<Vec<_>>(),
        [("CNY", i64::MAX)]
    );
    client
        .get_customer_rfm(pb::GetCustomerRfmRequest {
            customer_id: C1.to_owned(),
        })
        .await?;
    // The total is compared exactly: past 10^15 (and past int64), never below zero.
    let over_max = |operator: pb::Operator, amount_minor: i64| {
        predicate(
            "purchase.amount",
            operator,
            pb::value::Kind::MoneyValue(Money {
                amount_minor,
                currency: "CNY".into(),
            }),
        )
    };
    let over = client
        .preview_segment(pb::PreviewSegmentRequest {
            rule: Some(over_max(pb::Operator::GreaterThan, 1_000_000_000_000_000)),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(over.member_count, 1);
    let under = client
        .preview_segment(pb::PreviewSegmentRequest {
            rule: Some(over_max(pb::Operator::LessThan, 0)),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(under.member_count, 0);
    let whales = rule_segment(
        client,
        "Whales",
        over_max(pb::Operator::GreaterThan, 1_000_000_000_000_000),
    )
    .await?;
    let explained = client
        .explain_membership(pb::ExplainMembershipRequest {
            segment_id: whales,
            customer_id: C1.to_owned(),
        })
        .await?
        .into_inner();
    assert!(explained.member, "{explained:?}");
    Ok(())
}

const D1: &str = "0190f6f5-0000-7000-8000-0000000000d1";

/// Profiles events of four customers: created, buying, one moving city, one merged into another
/// and unmerged, one erased; split where the static segment is made.
fn mixed_profiles_events() -> (Vec<Event>, Vec<Event>) {
    let merge = pr::CustomerMerged {
        merge_id: "merge-x".into(),
        source_customer_id: SOURCE.into(),
        target_customer_id: TARGET.into(),
        merge_time: ts(as_of()),
        target_traits: Some(traits(TARGET, "Hangzhou")),
        moved_activity_count: 1,
    };
    let unmerge = pr::CustomerUnmerged {
        merge_id: "merge-x".into(),
        source_customer_id: SOURCE.into(),
        target_customer_id: TARGET.into(),
        source_traits: Some(traits_later(SOURCE, "Hangzhou")),
        target_traits: Some(traits(TARGET, "Hangzhou")),
        ..Default::default()
    };
    let created = |seq, id, city| {
        event(
            seq,
            id,
            &pr::CustomerCreated {
                traits: Some(traits(id, city)),
            },
        )
    };
    let mut two_categories = purchase("a2", C1, 10, 80_00);
    if let Some(pr::activity::Details::Purchase(p)) = two_categories
        .activity
        .as_mut()
        .and_then(|a| a.details.as_mut())
    {
        p.categories = vec!["tea".into(), "cups".into()];
    }
    let first = vec![
        created(1, C1, "Hangzhou"),
        created(2, SOURCE, "Shanghai"),
        created(3, TARGET, "Hangzhou"),
        created(4, D1, "Beijing"),
        event(5, C1, &purchase("a1", C1, 40, 120_00)),
        event(6, C1, &two_categories),
        event(7, SOURCE, &purchase("b1", SOURCE, 5, 50_00)),
    ];
    let second = vec![
        event(
            8,
            SOURCE,
            &pr::CustomerUpdated {
                traits: Some(traits_later(SOURCE, "Hangzhou")),
                ..Default::default()
            },
        ),
        event(9, TARGET, &merge),
        event(10, TARGET, &purchase("c1", TARGET, 3, 30_00)),
        event(11, D1, &purchase("d1", D1, 1, 10_00)),
        event(
            12,
            D1,
            &pr::CustomerErased {
                customer_id: D1.into(),
                ..Default::default()
            },
        ),
        event(13, TARGET, &unmerge),
        event(14, SOURCE, &purchase("b2", SOURCE, 1, 20_00)),
        event(
            15,
            C1,
            &pr::CustomerUpdated {
                traits: Some(traits_later(C1, "Beijing")),
                ..Default::default()
            },
        ),
        // A run of activities ending the batch: one redelivered inside the run.
        event(16, C1, &visit("v1", C1, 2)),
        event(17, C1, &purchase("e1", C1, 1, 5_00)),
        event(18, C1, &purchase("e1", C1, 1, 5_00)),
    ];
    (first, second)
}

/// The segments of the mixed-batch tests: three rule segments on traits, purchases and
/// feedback, one referencing another. Made before any event, so no recompute races the feed.
async fn mixed_segments(client: &mut Client) -> anyhow::Result<()> {
    let city = pb::value::Kind::StringValue("Hangzhou".into());
    rule_segment(
        client,
        "Hangzhou",
        predicate("geo.city", pb::Operator::Equals, city),
    )
    .await?;
    let two = pb::value::Kind::IntegerValue(2);
    let buyers = rule_segment(
        client,
        "Buyers",
        predicate("purchase.count", pb::Operator::GreaterOrEqual, two),
    )
    .await?;
    let nine = pb::value::Kind::IntegerValue(9);
    rule_segment(
        client,
        "Promoters",
        predicate(
            "feedback.last_nps_score",
            pb::Operator::GreaterOrEqual,
            nine,
        ),
    )
    .await?;
    rule_segment(client, "Via buyers", member_of(&buyers)).await?;
    Ok(())
}

/// Everything the feed handlers leave, as comparable lines: memberships and counts by segment
/// name, the facts columns events write, activities, tombstones.
async fn projection(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let lines: Vec<String> = sqlx::query_scalar(
        "SELECT format('member %s %s', s.display_name, m.customer_id) \
           FROM memberships m JOIN segments s USING (segment_id) \
         UNION ALL SELECT format('count %s %s', display_name, member_count) FROM segments \
         UNION ALL SELECT format('facts %s %s %s %s %s %s %s %s', customer_id, city, \
             consent_sms, profiles_sequence, feedback_sequence, lifecycle_stage, \
             last_nps_score, rfm_frequency) FROM customer_facts \
         UNION ALL SELECT format('activity %s %s %s %s %s %s', customer_id, activity_id, \
             kind, categories, amount_minor, channel) \
           FROM customer_activities \
         UNION ALL SELECT format('tombstone %s %s', customer_id, reason) \
           FROM customer_tombstones \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(lines)
}

/// Feed batches (issue 16): one batch mixing customers, a merge, an erasure and an unmerge
/// leaves exactly what the same events applied one at a time leave — facts, activities,
/// memberships, counts — and redelivering a partly applied batch, or the whole of it again,
/// changes nothing.
#[tokio::test]
async fn a_batch_mixing_customers_merges_and_erasures_leaves_what_single_events_leave()
-> anyhow::Result<()> {
    let (first, second) = mixed_profiles_events();
    let feedback = [
        event(1, C1, &nps(C1, 10, 1)),
        event(2, TARGET, &nps(TARGET, 3, 1)),
    ];
    let mut projections = Vec::new();
    for batched in [false, true] {
        let mut app = spawn_app_at(as_of()).await?;
        let feeds = Feeds::new(&app);
        mixed_segments(&mut app.client).await?;
        if batched {
            feeds.apply_batch(&app.pool, &first).await?;
        } else {
            feeds.apply_all(&app.pool, &first).await?;
        }
        // Statics pass to the merge target and come back with the unmerge.
        static_segment(&mut app.client, "Listed", &[SOURCE]).await?;
        let mut rest = second.clone();
        rest.extend(feedback.iter().cloned());
        if batched {
            // Half of the second batch lands, then the whole of it is redelivered, twice.
            feeds.apply_batch(&app.pool, &rest[..3]).await?;
            feeds.apply_batch(&app.pool, &rest).await?;
            feeds.apply_batch(&app.pool, &rest).await?;
        } else {
            feeds.apply_all(&app.pool, &rest).await?;
        }
        projections.push(projection(&app.pool).await?);
    }
    let (single, batched) = (&projections[0], &projections[1]);
    assert_eq!(single, batched);
    // Not vacuous: the events did what they say.
    for line in [
        format!("member Buyers {C1}"),
        format!("member Promoters {C1}"),
        format!("member Via buyers {C1}"),
        format!("member Hangzhou {SOURCE}"),
        format!("member Buyers {SOURCE}"),
        format!("member Listed {SOURCE}"),
        format!("member Hangzhou {TARGET}"),
        format!("tombstone {D1} erased"),
        "count Buyers 2".to_owned(),
        format!("activity {C1} a2 purchase {{tea,cups}} 8000 store"),
        format!("activity {C1} v1 visit {{}}  web"),
        format!("activity {C1} e1 purchase {{tea}} 500 store"),
    ] {
        assert!(batched.contains(&line), "{line} missing from {batched:#?}");
    }
    for absent in [
        format!("member Hangzhou {C1}"),
        format!("member Buyers {TARGET}"),
        format!("member Listed {TARGET}"),
        format!("member Promoters {TARGET}"),
    ] {
        assert!(!batched.contains(&absent), "{absent} in {batched:#?}");
    }
    assert!(
        !batched
            .iter()
            .any(|l| l.contains(D1) && !l.starts_with("tombstone"))
    );
    let e1 = batched.iter().filter(|l| l.contains(" e1 ")).count();
    assert_eq!(
        e1, 1,
        "the activity redelivered inside a run is stored once"
    );
    Ok(())
}

/// Purchases before any full RFM run leave customers unscored (the per-event refresh never
/// computes bounds over everyone); the scheduler's check queues the run that stores bounds
/// and scores everyone, queues nothing while bounds are current, and queues again once the
/// customer base has doubled.
#[tokio::test]
async fn events_before_any_full_run_are_scored_once_the_queued_run_stores_bounds()
-> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let feeds = Feeds::new(&app);
    let (first, _) = mixed_profiles_events();
    // Nothing bought yet: nothing to compute bounds over.
    feeds.apply_batch(&app.pool, &first[..4]).await?;
    assert!(!custops_segmentation::jobs::scheduler::ensure_rfm_bounds(&app.pool, as_of()).await?);
    feeds.apply_batch(&app.pool, &first[4..]).await?;
    let rfm_of = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            anyhow::Ok(
                client
                    .get_customer_rfm(pb::GetCustomerRfmRequest {
                        customer_id: C1.into(),
                    })
                    .await?
                    .into_inner()
                    .rfm
                    .unwrap_or_default(),
            )
        }
    };
    let before = rfm_of(&mut app.client).await?;
    assert!(!before.scored, "{before:?}");
    assert_eq!(before.frequency, 2, "raw values are still kept: {before:?}");

    assert!(custops_segmentation::jobs::scheduler::ensure_rfm_bounds(&app.pool, as_of()).await?);
    // Queued once: a second check finds the job.
    assert!(!custops_segmentation::jobs::scheduler::ensure_rfm_bounds(&app.pool, as_of()).await?);
    let mut scored = false;
    for _ in 0..200 {
        if rfm_of(&mut app.client).await?.scored {
            scored = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(scored, "the queued RFM run did not score the customer");
    let mut finished = false;
    for _ in 0..200 {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recompute_jobs WHERE state IN ('queued', 'running')",
        )
        .fetch_one(&app.pool)
        .await?;
        if active == 0 {
            finished = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(finished, "the RFM job did not end");
    assert!(!custops_segmentation::jobs::scheduler::ensure_rfm_bounds(&app.pool, as_of()).await?);

    // The base grows past twice what the bounds were computed over (and past 100).
    sqlx::query(
        "INSERT INTO customer_facts (customer_id, lifecycle_stage_start_time, update_time) \
         SELECT 'grown-' || g, $1, $1 FROM generate_series(1, 200) AS g",
    )
    .bind(as_of())
    .execute(&app.pool)
    .await?;
    assert!(custops_segmentation::jobs::scheduler::ensure_rfm_bounds(&app.pool, as_of()).await?);
    Ok(())
}
