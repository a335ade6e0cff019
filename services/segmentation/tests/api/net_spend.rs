//! Net spend (issue 21): refunds on the profiles feed reduce the purchase of their order. Events
//! go through the feed handler as the consumer runs them; everything is read back over gRPC
//! (GetCustomerFacts, PreviewSegment: the SQL evaluator, rule segment memberships after a feed
//! event: the in-process one, GetCustomerRfm, GetCustomerLifecycle).

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written yuan_fen, e.g. 120_00 = 120.00 CNY"
)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use custops_common::clock::Clock;
use custops_common::consumer::EventHandler;
use custops_contracts::custops::common::v1::{Event, Money};
use custops_contracts::custops::profiles::v1 as pr;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::feeds::profiles::ProfilesFeed;
use custops_segmentation::wire::timestamp;
use prost::{Message, Name};

use crate::helpers::{TestApp, as_of, predicate, spawn_app_at};

const C1: &str = "0190f6f5-0000-7000-8000-0000000001c1";
const C2: &str = "0190f6f5-0000-7000-8000-0000000001c2";
const SOURCE: &str = "0190f6f5-0000-7000-8000-00000000015a";
const TARGET: &str = "0190f6f5-0000-7000-8000-00000000017a";

/// The profiles feed of `app`, applying events as the consumer does.
struct Feed<'a> {
    app: &'a TestApp,
    handler: ProfilesFeed,
    sequence: i64,
}

impl<'a> Feed<'a> {
    fn new(app: &'a TestApp) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
        Self {
            app,
            handler: ProfilesFeed::new(clock),
            sequence: 0,
        }
    }

    /// The next envelope of the feed for `payload`.
    fn event<M: Message + Name>(&mut self, payload: &M) -> Event {
        self.sequence += 1;
        Event {
            sequence: self.sequence,
            event_id: format!("ev-{}-{}", M::NAME, self.sequence),
            aggregate_type: "customer".into(),
            aggregate_id: String::new(),
            event_type: M::full_name(),
            occur_time: Some(timestamp(as_of())),
            payload: Some(prost_types::Any {
                type_url: M::type_url(),
                value: payload.encode_to_vec(),
            }),
            traceparent: String::new(),
        }
    }

    /// Applies `payload` alone, in its own transaction.
    async fn send<M: Message + Name>(&mut self, payload: &M) -> anyhow::Result<()> {
        let event = self.event(payload);
        self.redeliver(&event).await
    }

    /// Applies `event` (again) alone.
    async fn redeliver(&self, event: &Event) -> anyhow::Result<()> {
        let mut tx = self.app.pool.begin().await?;
        self.handler.handle(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies `events` as one batch.
    async fn batch(&self, events: &[Event]) -> anyhow::Result<()> {
        let mut tx = self.app.pool.begin().await?;
        self.handler
            .handle_batch(&mut tx, events)
            .await
            .map_err(|e| e.source.context(format!("event {}", e.index)))?;
        tx.commit().await?;
        Ok(())
    }

    async fn create(&mut self, customer: &str) -> anyhow::Result<()> {
        self.send(&pr::CustomerCreated {
            traits: Some(traits(customer)),
        })
        .await
    }
}

fn traits(customer: &str) -> pr::CustomerTraits {
    pr::CustomerTraits {
        customer_id: customer.into(),
        state: pr::CustomerState::Active as i32,
        ..Default::default()
    }
}

fn days_ago(days: i64) -> DateTime<Utc> {
    as_of() - Duration::days(days)
}

fn money(amount_minor: i64, currency: &str) -> Money {
    Money {
        amount_minor,
        currency: currency.into(),
    }
}

fn activity(
    activity_id: &str,
    customer: &str,
    at: DateTime<Utc>,
    details: pr::activity::Details,
) -> pr::ActivityRecorded {
    pr::ActivityRecorded {
        activity: Some(pr::Activity {
            activity_id: activity_id.into(),
            customer_id: customer.into(),
            source: "orders".into(),
            event_id: activity_id.into(),
            occur_time: Some(timestamp(at)),
            channel: "store".into(),
            details: Some(details),
            ..Default::default()
        }),
    }
}

/// A purchase of order `order` in CNY.
fn purchase(
    id: &str,
    customer: &str,
    order: &str,
    at: DateTime<Utc>,
    amount: i64,
) -> pr::ActivityRecorded {
    let details = pr::activity::Details::Purchase(pr::Purchase {
        order_id: order.into(),
        amount: Some(money(amount, "CNY")),
        categories: vec!["tea".into()],
        item_count: 1,
    });
    activity(id, customer, at, details)
}

/// A refund of order `order`.
fn refund(
    id: &str,
    customer: &str,
    order: &str,
    at: DateTime<Utc>,
    amount: Money,
) -> pr::ActivityRecorded {
    let details = pr::activity::Details::Refund(pr::Refund {
        order_id: order.into(),
        amount: Some(amount),
        categories: vec!["tea".into()],
    });
    activity(id, customer, at, details)
}

/// GetCustomerFacts' purchase aggregates of `customer`.
async fn purchases(app: &TestApp, customer: &str) -> anyhow::Result<pb::PurchaseFacts> {
    Ok(app
        .client
        .clone()
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: customer.into(),
        })
        .await?
        .into_inner()
        .facts
        .and_then(|f| f.purchases)
        .unwrap_or_default())
}

/// (count, CNY total) of GetCustomerFacts.
async fn spend(app: &TestApp, customer: &str) -> anyhow::Result<(i64, i64)> {
    let facts = purchases(app, customer).await?;
    let cny = facts
        .purchase_amounts
        .iter()
        .filter(|m| m.currency == "CNY")
        .map(|m| m.amount_minor)
        .sum();
    Ok((facts.purchase_count, cny))
}

/// RFM (frequency, monetary, recency days) of `customer` as GetCustomerRfm stores them.
async fn rfm(app: &TestApp, customer: &str) -> anyhow::Result<(i64, i64, Option<i32>)> {
    let rfm = app
        .client
        .clone()
        .get_customer_rfm(pb::GetCustomerRfmRequest {
            customer_id: customer.into(),
        })
        .await?
        .into_inner()
        .rfm
        .unwrap_or_default();
    Ok((
        rfm.frequency,
        rfm.monetary.unwrap_or_default().amount_minor,
        rfm.recency_days,
    ))
}

/// `purchase.amount <operator> amount CNY`, over the last `window` days when given.
fn amount(operator: pb::Operator, amount_minor: i64, window: Option<i32>) -> pb::Condition {
    let mut condition = predicate(
        "purchase.amount",
        operator,
        vec![pb::Value {
            kind: Some(pb::value::Kind::MoneyValue(money(amount_minor, "CNY"))),
        }],
    );
    if let (Some(days), Some(pb::condition::Kind::Predicate(p))) = (window, &mut condition.kind) {
        p.window = Some(pb::ActivityWindow {
            span: Some(pb::activity_window::Span::LastDays(days)),
        });
    }
    condition
}

/// `purchase.count = n`.
fn count_is(n: i64) -> pb::Condition {
    predicate(
        "purchase.count",
        pb::Operator::Equals,
        vec![pb::Value {
            kind: Some(pb::value::Kind::IntegerValue(n)),
        }],
    )
}

/// Whether `customer` is a stored member of `segment` (Postgres, the truth: lookups are
/// cached).
async fn member(app: &TestApp, segment: &pb::Segment, customer: &str) -> anyhow::Result<bool> {
    let members = app.stored_members(&segment.segment_id).await?;
    Ok(members.iter().any(|m| m == customer))
}

/// How many customers PreviewSegment (the SQL evaluator) finds for `rule`.
async fn preview(app: &TestApp, rule: pb::Condition) -> anyhow::Result<i64> {
    Ok(app
        .client
        .clone()
        .preview_segment(pb::PreviewSegmentRequest {
            rule: Some(rule),
            ..Default::default()
        })
        .await?
        .into_inner()
        .member_count)
}

#[tokio::test]
async fn a_partial_refund_reduces_the_sum_and_keeps_the_count() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let mut feed = Feed::new(&app);
    feed.create(C1).await?;
    feed.send(&purchase("p1", C1, "o1", days_ago(40), 120_00))
        .await?;
    feed.send(&purchase("p2", C1, "o2", days_ago(10), 80_00))
        .await?;
    // Rule segments decided by the in-process evaluator as feed events arrive.
    let big = app
        .rule_segment(
            "Spent 200+",
            amount(pb::Operator::GreaterOrEqual, 200_00, None),
        )
        .await?;
    let two = app.rule_segment("Two orders", count_is(2)).await?;
    assert!(member(&app, &big, C1).await?);
    assert_eq!(spend(&app, C1).await?, (2, 200_00));

    feed.send(&refund("r1", C1, "o1", days_ago(5), money(20_00, "CNY")))
        .await?;

    assert_eq!(spend(&app, C1).await?, (2, 180_00), "count kept, sum net");
    assert!(!member(&app, &big, C1).await?, "left on the refund");
    assert!(member(&app, &two, C1).await?);
    // The SQL evaluator agrees.
    let exactly = amount(pb::Operator::Equals, 180_00, None);
    assert_eq!(preview(&app, exactly).await?, 1);
    let over = amount(pb::Operator::GreaterOrEqual, 200_00, None);
    assert_eq!(preview(&app, over).await?, 0);
    // The refund counts at its purchase's time: the last 30 days hold o2 whole, and o1's
    // refund (made 5 days ago) does not reduce them.
    let last_30 = amount(pb::Operator::Equals, 80_00, Some(30));
    assert_eq!(preview(&app, last_30).await?, 1);
    let both = amount(pb::Operator::Equals, 180_00, Some(60));
    assert_eq!(preview(&app, both).await?, 1);
    // RFM monetary follows; frequency keeps both orders.
    assert_eq!(rfm(&app, C1).await?, (2, 180_00, Some(10)));
    Ok(())
}

#[tokio::test]
async fn a_full_refund_removes_the_order_from_every_purchase_field() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let mut feed = Feed::new(&app);
    feed.create(C1).await?;
    feed.send(&purchase("p1", C1, "o1", days_ago(40), 100_00))
        .await?;
    feed.send(&purchase("p2", C1, "o2", days_ago(10), 50_00))
        .await?;
    let two = app.rule_segment("Two orders", count_is(2)).await?;
    assert!(member(&app, &two, C1).await?);

    // o2 refunded in two parts, the second more than what was left: net 0, not below.
    feed.send(&refund("r1", C1, "o2", days_ago(9), money(30_00, "CNY")))
        .await?;
    assert_eq!(spend(&app, C1).await?, (2, 120_00));
    feed.send(&refund("r2", C1, "o2", days_ago(8), money(30_00, "CNY")))
        .await?;

    let facts = purchases(&app, C1).await?;
    assert_eq!(facts.purchase_count, 1);
    assert_eq!(facts.purchase_amounts, vec![money(100_00, "CNY")]);
    assert_eq!(facts.first_purchase_time, Some(timestamp(days_ago(40))));
    assert_eq!(
        facts.last_purchase_time,
        Some(timestamp(days_ago(40))),
        "the last purchase is the one not refunded"
    );
    assert!(!member(&app, &two, C1).await?);
    assert_eq!(preview(&app, count_is(1)).await?, 1);
    assert_eq!(preview(&app, count_is(2)).await?, 0);
    let last = predicate(
        "purchase.last_time",
        pb::Operator::WithinLast,
        vec![pb::Value {
            kind: Some(pb::value::Kind::DaysValue(30)),
        }],
    );
    assert_eq!(preview(&app, last).await?, 0);
    // RFM: frequency, monetary and recency all without o2.
    assert_eq!(rfm(&app, C1).await?, (1, 100_00, Some(40)));
    Ok(())
}

#[tokio::test]
async fn refunds_apply_to_their_own_order_customer_and_currency_whenever_the_purchase_arrives()
-> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let mut feed = Feed::new(&app);
    feed.create(C1).await?;
    feed.create(C2).await?;
    // A historical import: the refund first, then (in a later batch) its purchase.
    feed.send(&refund("r1", C1, "o1", days_ago(20), money(25_00, "CNY")))
        .await?;
    assert_eq!(spend(&app, C1).await?, (0, 0));
    // A refund is neither a purchase nor an interaction.
    let interactions = app
        .client
        .clone()
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: C1.into(),
        })
        .await?
        .into_inner()
        .facts
        .and_then(|f| f.interactions)
        .unwrap_or_default();
    assert_eq!(interactions.interaction_count, 0);
    let interacted = predicate(
        "interaction.count",
        pb::Operator::GreaterThan,
        vec![pb::Value {
            kind: Some(pb::value::Kind::IntegerValue(0)),
        }],
    );
    assert_eq!(preview(&app, interacted).await?, 0);
    let events = [
        feed.event(&purchase("p1", C1, "o1", days_ago(30), 100_00)),
        // Another customer's order with the same id is not refunded by C1's refund.
        feed.event(&purchase("p2", C2, "o1", days_ago(30), 100_00)),
        // A refund in another currency than the purchase's does not apply.
        feed.event(&refund("r2", C1, "o1", days_ago(19), money(10_00, "USD"))),
    ];
    feed.batch(&events).await?;
    assert_eq!(spend(&app, C1).await?, (1, 75_00));
    assert_eq!(spend(&app, C2).await?, (1, 100_00));
    assert_eq!(rfm(&app, C1).await?.1, 75_00);
    assert_eq!(
        preview(&app, amount(pb::Operator::Equals, 75_00, None)).await?,
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_redelivered_refund_is_subtracted_once() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let mut feed = Feed::new(&app);
    feed.create(C1).await?;
    feed.send(&purchase("p1", C1, "o1", days_ago(30), 100_00))
        .await?;
    let refunded = feed.event(&refund("r1", C1, "o1", days_ago(3), money(40_00, "CNY")));
    feed.redeliver(&refunded).await?;
    feed.redeliver(&refunded).await?;
    // And twice within one batch.
    feed.batch(&[refunded.clone(), refunded.clone()]).await?;
    assert_eq!(spend(&app, C1).await?, (1, 60_00));
    assert_eq!(rfm(&app, C1).await?.1, 60_00);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_refunds")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, 1);
    Ok(())
}

#[tokio::test]
async fn merges_carry_refunds_unmerges_bring_them_back_and_erasure_removes_them()
-> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let mut feed = Feed::new(&app);
    feed.create(SOURCE).await?;
    feed.create(TARGET).await?;
    feed.send(&purchase("p1", SOURCE, "o1", days_ago(30), 100_00))
        .await?;
    feed.send(&refund(
        "r1",
        SOURCE,
        "o1",
        days_ago(20),
        money(30_00, "CNY"),
    ))
    .await?;
    // A refund recorded on the target before the merge for the source's order: it applies
    // once the two are one customer.
    feed.send(&refund(
        "r2",
        TARGET,
        "o1",
        days_ago(19),
        money(10_00, "CNY"),
    ))
    .await?;
    assert_eq!(spend(&app, SOURCE).await?, (1, 70_00));

    feed.send(&pr::CustomerMerged {
        merge_id: "merge-1".into(),
        source_customer_id: SOURCE.into(),
        target_customer_id: TARGET.into(),
        target_traits: Some(traits(TARGET)),
        ..Default::default()
    })
    .await?;
    assert_eq!(spend(&app, TARGET).await?, (1, 60_00));
    assert_eq!(rfm(&app, TARGET).await?.1, 60_00);

    feed.send(&pr::CustomerUnmerged {
        merge_id: "merge-1".into(),
        source_traits: Some(traits(SOURCE)),
        target_traits: Some(traits(TARGET)),
        ..Default::default()
    })
    .await?;
    assert_eq!(spend(&app, SOURCE).await?, (1, 70_00));
    assert_eq!(spend(&app, TARGET).await?, (0, 0));
    assert_eq!(rfm(&app, SOURCE).await?.1, 70_00);

    feed.send(&pr::CustomerErased {
        customer_id: SOURCE.into(),
        erase_time: Some(timestamp(as_of())),
        merged_customer_ids: vec![],
    })
    .await?;
    let left: Vec<String> =
        sqlx::query_scalar("SELECT activity_id FROM customer_refunds ORDER BY activity_id")
            .fetch_all(&app.pool)
            .await?;
    assert_eq!(
        left,
        ["r2"],
        "the source's refund is erased, the target's kept"
    );
    Ok(())
}
