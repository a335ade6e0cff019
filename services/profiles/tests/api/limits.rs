//! Amounts and counts at their extremes (issue 14, point 5): out-of-range values are
//! INVALID_ARGUMENT naming the field (one call or one import item), and a customer whose
//! in-range amounts add up past int64 is still readable and erasable.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use tonic::Code;

use crate::support::{
    TestApp, bad_fields, create, customer, expect_code, purchase, spawn_app, time, unique_email,
};

/// Largest amount of one activity (10^15 minor units).
const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

fn with_purchase(mut activity: pb::Activity, amount_minor: i64, item_count: i32) -> pb::Activity {
    if let Some(pb::activity::Details::Purchase(p)) = activity.details.as_mut() {
        p.amount = Some(common::Money {
            amount_minor,
            currency: "CNY".to_owned(),
        });
        p.item_count = item_count;
    }
    activity
}

fn refund(customer_id: &str, event_id: &str, amount_minor: i64) -> pb::Activity {
    pb::Activity {
        customer_id: customer_id.to_owned(),
        source: "order_service".to_owned(),
        event_id: event_id.to_owned(),
        occur_time: Some(time(-60)),
        channel: "web".to_owned(),
        details: Some(pb::activity::Details::Refund(pb::Refund {
            order_id: "order-1".to_owned(),
            amount: Some(common::Money {
                amount_minor,
                currency: "CNY".to_owned(),
            }),
            categories: Vec::new(),
        })),
        ..pb::Activity::default()
    }
}

/// Records `activity` and checks it is INVALID_ARGUMENT naming exactly `expected`.
async fn check(app: &TestApp, activity: pb::Activity, expected: &[&str]) -> anyhow::Result<()> {
    let name = format!("{:?}", activity.details);
    let status = expect_code(
        app.client
            .clone()
            .record_activity(pb::RecordActivityRequest {
                activity: Some(activity),
                customer_identity: None,
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), expected, "{name}");
    Ok(())
}

async fn net_spend(app: &TestApp, customer_id: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let view = app
        .client
        .clone()
        .get_customer360(pb::GetCustomer360Request {
            customer_id: customer_id.to_owned(),
            sections: Vec::new(),
            section_timeout: None,
        })
        .await?
        .into_inner();
    Ok(view
        .activity_summary
        .unwrap_or_default()
        .net_spend
        .into_iter()
        .map(|m| (m.currency, m.amount_minor))
        .collect())
}

#[tokio::test]
async fn amounts_and_item_counts_out_of_range_name_the_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let c = create(&app, customer(&unique_email("limits"))).await?;
    let id = c.customer_id.as_str();
    let amount = "activity.purchase.amount.amount_minor";
    let items = "activity.purchase.item_count";
    let refunded = "activity.refund.amount.amount_minor";
    for value in [i64::MAX, MAX_AMOUNT + 1, i64::MIN, -1] {
        check(
            &app,
            with_purchase(purchase(id, "p", 1), value, 1),
            &[amount],
        )
        .await?;
    }
    for count in [i32::MAX, 1_000_001, i32::MIN, -1] {
        check(
            &app,
            with_purchase(purchase(id, "p", 1), 1, count),
            &[items],
        )
        .await?;
    }
    check(
        &app,
        with_purchase(purchase(id, "p", 1), i64::MIN, i32::MIN),
        &[items, amount],
    )
    .await?;
    for value in [i64::MAX, MAX_AMOUNT + 1, i64::MIN, 0] {
        check(&app, refund(id, "r", value), &[refunded]).await?;
    }

    // The same through a bulk import: the item is rejected naming the field, the rest stored.
    let response = app
        .client
        .clone()
        .import_activities(tokio_stream::iter(
            [
                with_purchase(purchase(id, "i-0", 1), i64::MAX, 1),
                with_purchase(purchase(id, "i-1", 1), MAX_AMOUNT, 1_000_000),
                refund(id, "i-2", MAX_AMOUNT),
            ]
            .into_iter()
            .map(|a| pb::ImportActivitiesRequest {
                activity: Some(a),
                customer_identity: None,
            }),
        ))
        .await?
        .into_inner();
    assert_eq!((response.accepted_count, response.rejected_count), (2, 1));
    let fields: Vec<&str> = response
        .errors
        .iter()
        .flat_map(|e| e.field_violations.iter().map(|f| f.field.as_str()))
        .collect();
    assert_eq!(fields, [amount]);
    assert_eq!(net_spend(&app, id).await?, [("CNY".to_owned(), 0)]);
    Ok(())
}

#[tokio::test]
async fn a_net_spend_past_int64_saturates_and_the_customer_can_still_be_erased()
-> anyhow::Result<()> {
    // 9,300 orders of 10^15 fen: each in range, together 9.3 × 10^18, past int64.
    let app = spawn_app().await?;
    let c = create(&app, customer(&unique_email("rich"))).await?;
    let id = c.customer_id.clone();
    let items: Vec<pb::ImportActivitiesRequest> = (0..9_300)
        .map(|i| pb::ImportActivitiesRequest {
            activity: Some(with_purchase(
                purchase(&id, &format!("max-{i}"), 1),
                MAX_AMOUNT,
                1,
            )),
            customer_identity: None,
        })
        .collect();
    let response = app
        .client
        .clone()
        .import_activities(tokio_stream::iter(items))
        .await?
        .into_inner();
    assert_eq!(response.accepted_count, 9_300);

    assert_eq!(net_spend(&app, &id).await?, [("CNY".to_owned(), i64::MAX)]);
    app.client
        .clone()
        .erase_customer(pb::EraseCustomerRequest {
            customer_id: id.clone(),
            request_id: String::new(),
        })
        .await?;
    // The anonymous totals keep the exact sum.
    let kept: String =
        sqlx::query_scalar("SELECT sum(amount_minor)::text FROM erased_activity_aggregates")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(kept, "9300000000000000000");
    Ok(())
}
