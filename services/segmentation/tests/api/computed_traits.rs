//! Computed traits (issue 21 item 4, computed_trait.proto) through the API: values computed by
//! hand from custom events recorded in the real profiles service, a rule on a trait moving its
//! customer within a second, versions, the refusals (bad definitions by field, a taken name, a
//! trait in use), the rollover of a time-dependent trait, and erasure taking the values.

use std::time::{Duration, Instant};

use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::segmentation::v1 as pb;
use pb::computed_trait_value::Value as T;
use pb::condition::Kind;
use pb::value::Kind as V;
use tonic::Code;

use crate::helpers::{
    TestApp, custom_activity, event_type, eventually, fields, predicate, profiles_customers,
    spawn_app, spawn_with_profiles,
};

/// How long a change may take to travel profiles → feed → segmentation on a loaded test
/// machine: a bound on waiting, not a claim about speed.
const PATIENCE: Duration = Duration::from_secs(10);

fn value(kind: V) -> pb::Value {
    pb::Value { kind: Some(kind) }
}

fn last_days(days: i32) -> Option<pb::ActivityWindow> {
    Some(pb::ActivityWindow {
        span: Some(pb::activity_window::Span::LastDays(days)),
    })
}

/// `coupon_redeemed` with a number `value` and a string `campaign`, as profiles defines it.
fn coupon_type() -> profiles::EventType {
    event_type(
        "coupon_redeemed",
        "A coupon was redeemed",
        &[
            ("value", profiles::EventPropertyType::Number),
            ("campaign", profiles::EventPropertyType::String),
        ],
    )
}

/// A coupon of `amount` from `campaign`, redeemed `days_ago` days (and an hour) before now.
fn coupon(
    customer_id: &str,
    event_id: &str,
    amount: f64,
    campaign: &str,
    days_ago: i64,
) -> profiles::Activity {
    use profiles::event_property_value::Value as P;
    custom_activity(
        customer_id,
        event_id,
        "coupon_redeemed",
        3600 + days_ago * 86_400,
        vec![
            ("value", P::NumberValue(amount)),
            ("campaign", P::StringValue(campaign.to_owned())),
        ],
    )
}

/// "coupon_value_90d": SUM of `value` over the last 90 days.
fn coupon_value_90d() -> pb::ComputedTrait {
    pb::ComputedTrait {
        name: "coupon_value_90d".to_owned(),
        description: "Coupon value redeemed in the last 90 days".to_owned(),
        event_type: "coupon_redeemed".to_owned(),
        aggregate: pb::EventAggregate::Sum.into(),
        property: "value".to_owned(),
        window: last_days(90),
        ..Default::default()
    }
}

/// "favourite_campaign": the campaign of most coupons, over the whole history.
fn favourite_campaign() -> pb::ComputedTrait {
    pb::ComputedTrait {
        name: "favourite_campaign".to_owned(),
        event_type: "coupon_redeemed".to_owned(),
        aggregate: pb::EventAggregate::MostFrequent.into(),
        property: "campaign".to_owned(),
        ..Default::default()
    }
}

impl TestApp {
    /// Creates `computed_trait` and waits for its job to store everyone's values.
    async fn computed_trait(
        &self,
        computed_trait: pb::ComputedTrait,
    ) -> anyhow::Result<pb::ComputedTrait> {
        let created = self
            .client
            .clone()
            .create_computed_trait(pb::CreateComputedTraitRequest {
                computed_trait: Some(computed_trait),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        let job = self.wait_job(&created.recompute_job_id).await?;
        anyhow::ensure!(
            job.state == i32::from(pb::RecomputeJobState::Succeeded)
                && job.scope == i32::from(pb::RecomputeScope::ComputedTraits),
            "job ended {job:?}"
        );
        Ok(created.computed_trait.unwrap_or_default())
    }

    /// The customer's trait values by GetCustomerFacts, as (name, version, value, stored).
    async fn trait_values(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<Vec<(String, i64, Option<T>, bool)>> {
        let facts = self
            .client
            .clone()
            .get_customer_facts(pb::GetCustomerFactsRequest {
                customer_id: customer_id.to_owned(),
            })
            .await?
            .into_inner()
            .facts
            .unwrap_or_default();
        let by_rpc = self
            .client
            .clone()
            .get_customer_computed_traits(pb::GetCustomerComputedTraitsRequest {
                customer_id: customer_id.to_owned(),
            })
            .await?
            .into_inner()
            .computed_traits;
        anyhow::ensure!(
            by_rpc == facts.computed_traits,
            "GetCustomerComputedTraits {by_rpc:?} differs from GetCustomerFacts {:?}",
            facts.computed_traits
        );
        Ok(facts
            .computed_traits
            .into_iter()
            .map(|v| (v.name, v.version, v.value, v.compute_time.is_some()))
            .collect())
    }
}

/// Records `activity` in profiles.
async fn record(
    profiles: &mut crate::helpers::ProfilesClient,
    activity: profiles::Activity,
) -> anyhow::Result<()> {
    profiles
        .record_activity(profiles::RecordActivityRequest {
            activity: Some(activity),
            customer_identity: None,
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn traits_hold_the_hand_computed_aggregates_and_a_rule_on_one_moves_its_customer_within_a_second()
-> anyhow::Result<()> {
    // Arrange: profiles in-process, segmentation following its feed; a customer with four
    // coupons, one of them 120 days old, and one without any.
    let (app, mut profiles, _stop_profiles) = spawn_with_profiles(None).await?;
    profiles
        .create_event_type(profiles::CreateEventTypeRequest {
            event_type: Some(coupon_type()),
        })
        .await?;
    let ids =
        profiles_customers(&mut profiles, &["coupons@example.com", "none@example.com"]).await?;
    let (id, other) = (ids[0].clone(), ids[1].clone());
    for (event_id, amount, campaign, days_ago) in [
        ("k-1", 10.0, "spring", 3),
        ("k-2", 25.5, "autumn", 40),
        ("k-3", 7.0, "autumn", 89),
        ("k-4", 500.0, "spring", 120),
        ("k-5", 1.0, "spring", 200),
    ] {
        record(
            &mut profiles,
            coupon(&id, event_id, amount, campaign, days_ago),
        )
        .await?;
    }
    let stored = app.stores_events(&id, 5, PATIENCE).await;
    assert!(stored, "the coupons never reached segmentation");

    // Act 1: define the traits (their jobs store everyone's values).
    let sum = app.computed_trait(coupon_value_90d()).await?;
    app.computed_trait(favourite_campaign()).await?;

    // Assert 1: the values computed by hand — 10 + 25.5 + 7 inside 90 days; "spring" on 3
    // coupons against 2; the customer without coupons reads 0 and unset, not stored.
    assert_eq!(sum.version, 1);
    assert_eq!(sum.value_type, i32::from(pb::ValueType::Double));
    assert!(sum.time_dependent, "a last_days window is time-dependent");
    assert_eq!(
        app.trait_values(&id).await?,
        [
            (
                "coupon_value_90d".to_owned(),
                1,
                Some(T::DoubleValue(42.5)),
                true
            ),
            (
                "favourite_campaign".to_owned(),
                1,
                Some(T::StringValue("spring".to_owned())),
                true
            ),
        ]
    );
    assert_eq!(
        app.trait_values(&other).await?,
        [
            (
                "coupon_value_90d".to_owned(),
                1,
                Some(T::DoubleValue(0.0)),
                false
            ),
            ("favourite_campaign".to_owned(), 1, None, false),
        ]
    );

    // Act 2: a segment on the trait, then a coupon of 10 bringing the sum to 52.5.
    let field = pb::Condition {
        kind: Some(Kind::Predicate(pb::Predicate {
            field: "computed.coupon_value_90d".to_owned(),
            operator: pb::Operator::GreaterOrEqual.into(),
            values: vec![value(V::IntegerValue(50))],
            ..Default::default()
        })),
    };
    let segment = app.rule_segment("coupon lovers", field).await?;
    assert!(!app.is_member(&segment.segment_id, &id).await?);
    let recorded = Instant::now();
    record(&mut profiles, coupon(&id, "k-6", 10.0, "autumn", 0)).await?;

    // Assert 2: the customer enters within a second of RecordActivity, with the new value
    // stored and the favourite campaign tied 3–3 and broken towards "autumn" (byte order).
    let entered = eventually(PATIENCE, || {
        let app = &app;
        let (segment_id, id) = (segment.segment_id.clone(), id.clone());
        async move { app.is_member(&segment_id, &id).await.unwrap_or(false) }
    })
    .await;
    let took = recorded.elapsed();
    assert!(entered, "the customer never entered the segment");
    assert!(
        took <= Duration::from_secs(1),
        "entering took {took:?}, more than a second"
    );
    let values = app.trait_values(&id).await?;
    assert_eq!(values[0].2, Some(T::DoubleValue(52.5)));
    assert_eq!(values[1].2, Some(T::StringValue("autumn".to_owned())));
    let explained = app
        .client
        .clone()
        .explain_membership(pb::ExplainMembershipRequest {
            segment_id: segment.segment_id.clone(),
            customer_id: id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        explained.explanation.unwrap_or_default().actual_values,
        [value(V::DoubleValue(52.5))]
    );

    // Act 3: the customer (holding a prediction too) is erased in profiles.
    sqlx::query(
        "INSERT INTO customer_predictions (customer_id, model_version, as_of_time, \
           repeat_transactions, recency_weeks, age_weeks, mean_value, probability_alive, \
           expected_purchases_90d, expected_value_minor, clv_minor, churn_risk) \
         VALUES ($1, 1, now(), 2, 3.0, 10.0, 15.0, 0.8, 1.2, 1500, 4000, false)",
    )
    .bind(&id)
    .execute(&app.pool)
    .await?;
    profiles
        .erase_customer(profiles::EraseCustomerRequest {
            customer_id: id.clone(),
            request_id: String::new(),
        })
        .await?;

    // Assert 3: nothing derived from their events is left.
    let gone = eventually(PATIENCE, || {
        let pool = app.pool.clone();
        let id = id.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT count(*) FROM customer_computed_traits WHERE customer_id = $1) \
                      + (SELECT count(*) FROM customer_predictions WHERE customer_id = $1) \
                      + (SELECT count(*) FROM customer_events WHERE customer_id = $1)",
            )
            .bind(&id)
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == 0)
        }
    })
    .await;
    assert!(
        gone,
        "the erased customer's trait values or prediction stayed"
    );
    Ok(())
}

/// Customers of the tests without profiles (GetCustomerFacts takes profiles' UUIDs).
const C1: &str = "01900000-0000-7000-8000-0000000000c1";
const RECENT: &str = "01900000-0000-7000-8000-0000000000c2";

/// Inserts the `coupon_redeemed` event type as the profiles feed records it.
async fn learn_coupon_type(app: &TestApp) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO event_types (name, properties, profiles_sequence) VALUES ('coupon_redeemed', \
         '[{\"name\": \"value\", \"type\": \"number\"}, {\"name\": \"campaign\", \"type\": \"string\"}, \
           {\"name\": \"total\", \"type\": \"money\"}]'::jsonb, 1)",
    )
    .execute(&app.pool)
    .await?;
    Ok(())
}

/// Inserts a coupon event of `customer_id` `days_ago` days before the app's clock.
async fn insert_coupon(
    app: &TestApp,
    activity_id: &str,
    customer_id: &str,
    amount: f64,
    days_ago: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO customer_events (activity_id, customer_id, event_type, occur_time, properties) \
         VALUES ($1, $2, 'coupon_redeemed', $3, jsonb_build_object('value', jsonb_build_object('number', $4::float8)))",
    )
    .bind(activity_id)
    .bind(customer_id)
    .bind(app.clock_now() - chrono::Duration::days(days_ago))
    .bind(amount)
    .execute(&app.pool)
    .await?;
    Ok(())
}

/// The fields a refused CreateComputedTrait named, or an error when it was accepted.
async fn refused(app: &TestApp, computed_trait: pb::ComputedTrait) -> anyhow::Result<Vec<String>> {
    match app
        .client
        .clone()
        .create_computed_trait(pb::CreateComputedTraitRequest {
            computed_trait: Some(computed_trait),
            request_id: String::new(),
        })
        .await
    {
        Ok(_) => anyhow::bail!("accepted"),
        Err(status) => {
            anyhow::ensure!(
                status.code() == Code::InvalidArgument,
                "refused with {status:?}"
            );
            Ok(fields(&status))
        }
    }
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_each_field_and_nothing_is_written() -> anyhow::Result<()>
{
    // Arrange
    let app = spawn_app().await?;
    learn_coupon_type(&app).await?;
    let base = coupon_value_90d();
    let cases: Vec<(pb::ComputedTrait, &[&str])> = vec![
        (
            pb::ComputedTrait {
                name: "Coupon-Value".to_owned(),
                ..base.clone()
            },
            &["computed_trait.name"],
        ),
        (
            pb::ComputedTrait {
                name: String::new(),
                event_type: "coupon_lost".to_owned(),
                ..base.clone()
            },
            &["computed_trait.event_type", "computed_trait.name"],
        ),
        (
            pb::ComputedTrait {
                property: "campaign".to_owned(),
                ..base.clone()
            },
            &["computed_trait.property"],
        ),
        (
            pb::ComputedTrait {
                aggregate: pb::EventAggregate::Count.into(),
                ..base.clone()
            },
            &["computed_trait.property"],
        ),
        (
            pb::ComputedTrait {
                aggregate: pb::EventAggregate::Unspecified.into(),
                ..base.clone()
            },
            &["computed_trait.aggregate"],
        ),
        (
            pb::ComputedTrait {
                window: last_days(1096),
                description: "x".repeat(1001),
                ..base.clone()
            },
            &[
                "computed_trait.description",
                "computed_trait.window.last_days",
            ],
        ),
        (
            pb::ComputedTrait {
                r#where: vec![
                    pb::EventPropertyFilter {
                        property: "total".to_owned(),
                        operator: pb::Operator::IsSet.into(),
                        values: Vec::new(),
                    },
                    pb::EventPropertyFilter {
                        property: "campaign".to_owned(),
                        operator: pb::Operator::GreaterThan.into(),
                        values: vec![value(V::StringValue("a".to_owned()))],
                    },
                ],
                ..base.clone()
            },
            &[
                // IS_SET on money: it compares in an operand's currency.
                "computed_trait.where[0].operator",
                "computed_trait.where[1].operator",
            ],
        ),
        (
            pb::ComputedTrait {
                property: "total".to_owned(),
                ..base.clone()
            },
            &["computed_trait.property"],
        ),
    ];
    for (computed_trait, expected) in cases {
        // Act (the fields sorted: the expectations are)
        let mut named = refused(&app, computed_trait.clone())
            .await
            .map_err(|e| e.context(format!("{computed_trait:?}")))?;
        named.sort();

        // Assert
        assert_eq!(named, expected, "{computed_trait:?}");
    }
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM computed_traits) + (SELECT count(*) FROM recompute_jobs)",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(written, 0, "a refused definition wrote something");
    Ok(())
}

#[tokio::test]
async fn a_definition_change_makes_a_version_and_traits_in_use_keep_their_type()
-> anyhow::Result<()> {
    // Arrange: a customer with coupons 10 and 30 days old, the trait over 90 days, and a
    // request id replayed.
    let app = spawn_app().await?;
    learn_coupon_type(&app).await?;
    app.put_customer(C1, "CN", &[]).await?;
    insert_coupon(&app, "k-1", C1, 5.0, 10).await?;
    insert_coupon(&app, "k-2", C1, 20.0, 30).await?;
    let create = pb::CreateComputedTraitRequest {
        computed_trait: Some(coupon_value_90d()),
        request_id: "create-coupon-trait".to_owned(),
    };
    let mut client = app.client.clone();
    let first = client
        .create_computed_trait(create.clone())
        .await?
        .into_inner();
    let replay = client
        .create_computed_trait(create.clone())
        .await?
        .into_inner();
    assert_eq!(first, replay, "a replay answers the first response");
    app.wait_job(&first.recompute_job_id).await?;
    let taken = client
        .create_computed_trait(pb::CreateComputedTraitRequest {
            request_id: String::new(),
            ..create
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(taken, Some(Code::AlreadyExists));
    assert_eq!(app.trait_values(C1).await?[0].2, Some(T::DoubleValue(25.0)));

    // Act 1: narrow the window to 20 days.
    let current = first.computed_trait.unwrap_or_default();
    let updated = client
        .update_computed_trait(pb::UpdateComputedTraitRequest {
            computed_trait: Some(pb::ComputedTrait {
                window: last_days(20),
                ..current.clone()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["window".to_owned()],
            }),
        })
        .await?
        .into_inner();
    app.wait_job(&updated.recompute_job_id).await?;

    // Assert 1: version 2 holds 5 (the 30-day-old coupon is out); version 1 is kept.
    let v2 = updated.computed_trait.unwrap_or_default();
    assert_eq!(v2.version, 2);
    assert_ne!(v2.etag, current.etag);
    assert_eq!(
        app.trait_values(C1).await?[0],
        (
            "coupon_value_90d".to_owned(),
            2,
            Some(T::DoubleValue(5.0)),
            true
        )
    );
    let v1 = client
        .get_computed_trait(pb::GetComputedTraitRequest {
            name: "coupon_value_90d".to_owned(),
            version: 1,
        })
        .await?
        .into_inner()
        .computed_trait
        .unwrap_or_default();
    assert_eq!(v1.window, last_days(90));
    let listed = client
        .list_computed_traits(pb::ListComputedTraitsRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.computed_traits, std::slice::from_ref(&v2));
    // A stale etag is ABORTED; a description alone makes no version.
    let stale = client
        .update_computed_trait(pb::UpdateComputedTraitRequest {
            computed_trait: Some(pb::ComputedTrait {
                description: "stale".to_owned(),
                ..current.clone()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".to_owned()],
            }),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(Code::Aborted));
    let described = client
        .update_computed_trait(pb::UpdateComputedTraitRequest {
            computed_trait: Some(pb::ComputedTrait {
                description: "Coupon value, 20 days".to_owned(),
                ..v2.clone()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".to_owned()],
            }),
        })
        .await?
        .into_inner();
    assert_eq!(described.recompute_job_id, "");
    assert_eq!(
        described.computed_trait.unwrap_or_default().version,
        2,
        "a description is not a new version"
    );

    // Act 2: a segment reads the trait; then its aggregate is changed, and it is deleted.
    let segment = app
        .rule_segment(
            "coupons",
            predicate(
                "computed.coupon_value_90d",
                pb::Operator::GreaterThan,
                vec![value(V::IntegerValue(1))],
            ),
        )
        .await?;
    assert_eq!(app.stored_members(&segment.segment_id).await?, [C1]);
    let to_count = client
        .update_computed_trait(pb::UpdateComputedTraitRequest {
            computed_trait: Some(pb::ComputedTrait {
                name: "coupon_value_90d".to_owned(),
                aggregate: pb::EventAggregate::Count.into(),
                property: String::new(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["aggregate".to_owned(), "property".to_owned()],
            }),
        })
        .await
        .err();
    let delete = client
        .delete_computed_trait(pb::DeleteComputedTraitRequest {
            name: "coupon_value_90d".to_owned(),
            etag: String::new(),
        })
        .await
        .err();

    // Assert 2: both refused, naming the segment.
    for refusal in [to_count, delete] {
        let status = refusal.ok_or_else(|| anyhow::anyhow!("a trait in use was changed"))?;
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("1 segment(s)"), "{status:?}");
    }

    // Act 3: without the segment the trait goes, values and all.
    client
        .delete_segment(pb::DeleteSegmentRequest {
            segment_id: segment.segment_id.clone(),
            etag: String::new(),
        })
        .await?;
    client
        .delete_computed_trait(pb::DeleteComputedTraitRequest {
            name: "coupon_value_90d".to_owned(),
            etag: String::new(),
        })
        .await?;

    // Assert 3
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM customer_computed_traits) \
              + (SELECT count(*) FROM computed_trait_versions)",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(left, 0);
    assert!(app.trait_values(C1).await?.is_empty());
    let missing = client
        .get_computed_trait(pb::GetComputedTraitRequest {
            name: "coupon_value_90d".to_owned(),
            version: 0,
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(missing, Some(Code::NotFound));
    Ok(())
}

#[tokio::test]
async fn a_time_dependent_trait_and_the_segments_reading_it_follow_the_clock_through_the_rollover()
-> anyhow::Result<()> {
    // Arrange: "coupons in the last 30 days", a customer whose one coupon is 25 days old, and
    // "no coupon lately" = that count is 0.
    let app = spawn_app().await?;
    learn_coupon_type(&app).await?;
    app.put_customer(RECENT, "CN", &[]).await?;
    insert_coupon(&app, "k-1", RECENT, 5.0, 25).await?;
    app.computed_trait(pb::ComputedTrait {
        name: "coupons_30d".to_owned(),
        event_type: "coupon_redeemed".to_owned(),
        aggregate: pb::EventAggregate::Count.into(),
        window: last_days(30),
        ..Default::default()
    })
    .await?;
    let lapsed = app
        .rule_segment(
            "no coupon lately",
            predicate(
                "computed.coupons_30d",
                pb::Operator::Equals,
                vec![value(V::IntegerValue(0))],
            ),
        )
        .await?;
    assert!(
        !lapsed.time_dependent,
        "the trait's rollover re-applies it, not the segment's own"
    );
    assert_eq!(
        app.trait_values(RECENT).await?[0].2,
        Some(T::IntegerValue(1))
    );
    assert!(app.stored_members(&lapsed.segment_id).await?.is_empty());

    // Act: six days pass (the coupon is now 31 days old) and the scheduler ticks.
    let state = app.state();
    custops_segmentation::jobs::scheduler::schedule_once(&state).await?;
    app.clock.advance(chrono::Duration::days(6));
    custops_segmentation::jobs::scheduler::schedule_once(&state).await?;

    // Assert: the value was stored anew and the segment followed it.
    assert_eq!(
        app.trait_values(RECENT).await?[0].2,
        Some(T::IntegerValue(0))
    );
    assert_eq!(app.stored_members(&lapsed.segment_id).await?, [RECENT]);
    Ok(())
}
