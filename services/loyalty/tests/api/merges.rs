//! A profiles `CustomerMerged` merges the two memberships once, however often it arrives.

use custops_common::consumer::EventHandler;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::profiles::v1::CustomerMerged;
use custops_loyalty::feeds::profiles::ProfilesFeed;
use prost::{Message, Name};
use uuid::Uuid;

use crate::helpers::{
    assert_ledger_invariants, by_id, deliver, feed_event, program, redeem, rid, spawn_app,
};

fn merged_event(merge_id: &str, source: Uuid, target: Uuid) -> Event {
    let payload = CustomerMerged {
        merge_id: merge_id.to_owned(),
        source_customer_id: source.to_string(),
        target_customer_id: target.to_string(),
        ..Default::default()
    };
    Event {
        sequence: 1,
        event_id: Uuid::now_v7().to_string(),
        event_type: CustomerMerged::full_name(),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{}", CustomerMerged::full_name()),
            value: payload.encode_to_vec(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_merge_delivered_twice_merges_the_members_once() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let mut client = app.client.clone();
    let (source_customer, target_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let enrol = |customer: Uuid| pb::EnrolMemberRequest {
        request_id: rid(),
        program_id: program_id.clone(),
        customer_id: customer.to_string(),
        enrol_channel: String::new(),
    };
    let source = client
        .enrol_member(enrol(source_customer))
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    let target = client
        .enrol_member(enrol(target_customer))
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    app.grant(&source.member_id, 300).await?;
    // Qualifying points: silver (500) for the source, which the survivor keeps.
    client
        .adjust_points(pb::AdjustPointsRequest {
            request_id: rid(),
            member: by_id(&source.member_id),
            qualifying_points: 600,
            reason: "Status match".to_owned(),
            ..Default::default()
        })
        .await?;
    app.grant(&target.member_id, 100).await?;

    let handler = ProfilesFeed::new(app.clock.clone());
    let event = merged_event("merge-1", source_customer, target_customer);
    for _ in 0..2 {
        let mut tx = app.pool.begin().await?;
        handler.handle(&mut tx, &event).await?;
        tx.commit().await?;
    }

    let survivor = client
        .get_member(pb::GetMemberRequest {
            member_id: target.member_id.clone(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    let balances = survivor.balances.unwrap_or_default();
    assert_eq!(
        (balances.available_points, balances.qualifying_points),
        (400, 600)
    );
    assert_eq!(
        survivor.tier.map(|t| t.tier_code).as_deref(),
        Some("silver")
    );
    let merged = client
        .get_member(pb::GetMemberRequest {
            member_id: source.member_id.clone(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert_eq!(merged.status, pb::MemberStatus::Merged as i32);
    assert_eq!(merged.merged_into_member_id, target.member_id);
    assert_eq!(merged.balances.map(|b| b.available_points), Some(0));

    // Mutations addressed to the merged-away member, or its customer, land on the survivor.
    let spent = client
        .redeem_points(redeem(rid(), &source.member_id, 350))
        .await?
        .into_inner();
    assert_eq!(
        spent.member.map(|m| m.member_id),
        Some(target.member_id.clone())
    );
    let by_customer = client
        .get_member_by_customer(pb::GetMemberByCustomerRequest {
            program_id: program_id.clone(),
            customer_id: source_customer.to_string(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert_eq!(by_customer.member_id, target.member_id);

    let merge_entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE kind IN (7, 8)")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(merge_entries, 2, "one MERGE_OUT and one MERGE_IN");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE type = 'custops.loyalty.v1.MembersMerged'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(events, 1);
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn a_birth_month_from_the_feed_doubles_purchase_points_that_month() -> anyhow::Result<()> {
    use chrono::Datelike;
    use custops_contracts::custops::common::v1::Date;
    use custops_contracts::custops::profiles::v1::{CustomerTraits, CustomerUpdated, Demographics};
    use custops_loyalty::domain::Clock;

    let app = spawn_app().await?;
    let mut birthday_program = program(pb::ClawbackPolicy::WithinBalance, 0);
    if let Some(rules) = birthday_program.earning_rules.as_mut() {
        rules.birthday_multiplier_percent = 200;
    }
    let program_id = app.create_program(birthday_program).await?;
    let mut client = app.client.clone();
    let (born_now, born_later) = (Uuid::now_v7(), Uuid::now_v7());
    let month = app.clock.now().month();
    let handler = ProfilesFeed::new(app.clock.clone());
    for (customer, birth_month) in [(born_now, month), (born_later, month % 12 + 1)] {
        let payload = CustomerUpdated {
            traits: Some(CustomerTraits {
                customer_id: customer.to_string(),
                demographics: Some(Demographics {
                    birth_date: Some(Date {
                        year: 1990,
                        month: i32::try_from(birth_month)?,
                        day: 1,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let event = Event {
            sequence: 1,
            event_id: Uuid::now_v7().to_string(),
            event_type: CustomerUpdated::full_name(),
            payload: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", CustomerUpdated::full_name()),
                value: payload.encode_to_vec(),
            }),
            ..Default::default()
        };
        let mut tx = app.pool.begin().await?;
        handler.handle(&mut tx, &event).await?;
        tx.commit().await?;
    }
    let mut earned = Vec::new();
    for (i, customer) in [born_now, born_later].into_iter().enumerate() {
        let member = client
            .enrol_member(pb::EnrolMemberRequest {
                request_id: rid(),
                program_id: program_id.clone(),
                customer_id: customer.to_string(),
                enrol_channel: String::new(),
            })
            .await?
            .into_inner()
            .member
            .unwrap_or_default();
        let out = client
            .earn_points(pb::EarnPointsRequest {
                request_id: rid(),
                member: by_id(&member.member_id),
                source: Some(pb::earn_points_request::Source::Purchase(pb::Purchase {
                    order_id: format!("bday-{i}"),
                    amount: Some(crate::helpers::cny(10_000)),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .await?
            .into_inner();
        earned.push(out.ledger_entry.map(|e| e.points).unwrap_or_default());
    }
    assert_eq!(earned, [200, 100]);
    Ok(())
}

#[tokio::test]
async fn an_erased_customer_is_closed_unlinked_and_cannot_enrol_again() -> anyhow::Result<()> {
    use custops_contracts::custops::profiles::v1::CustomerErased;

    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let mut client = app.client.clone();
    let customer = Uuid::now_v7();
    let enrol = || pb::EnrolMemberRequest {
        request_id: rid(),
        program_id: program_id.clone(),
        customer_id: customer.to_string(),
        enrol_channel: String::new(),
    };
    let member = client
        .enrol_member(enrol())
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    app.grant(&member.member_id, 70).await?;

    let payload = CustomerErased {
        customer_id: customer.to_string(),
        ..Default::default()
    };
    let event = Event {
        sequence: 1,
        event_id: Uuid::now_v7().to_string(),
        event_type: CustomerErased::full_name(),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{}", CustomerErased::full_name()),
            value: payload.encode_to_vec(),
        }),
        ..Default::default()
    };
    let handler = ProfilesFeed::new(app.clock.clone());
    for _ in 0..2 {
        let mut tx = app.pool.begin().await?;
        handler.handle(&mut tx, &event).await?;
        tx.commit().await?;
    }

    let erased = client
        .get_member(pb::GetMemberRequest {
            member_id: member.member_id.clone(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert!(erased.anonymized);
    assert_eq!(erased.customer_id, "");
    assert_eq!(erased.status, pb::MemberStatus::Closed as i32);
    assert_eq!(erased.balances.map(|b| b.available_points), Some(0));
    let statement = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            member: by_id(&member.member_id),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        statement
            .ledger_entries
            .iter()
            .all(|e| e.customer_id.is_empty())
    );
    assert_eq!(
        statement.ledger_entries.len(),
        2,
        "the grant and one FORFEIT"
    );

    let status = client
        .enrol_member(enrol())
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an erased customer enrolled"))?;
    assert_eq!(crate::helpers::error_info(&status).0, "CUSTOMER_ERASED");
    let status = client
        .reactivate_member(pb::ReactivateMemberRequest {
            member: by_id(&member.member_id),
            ..Default::default()
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an anonymised member was reactivated"))?;
    assert_eq!(crate::helpers::error_info(&status).0, "MEMBER_NOT_ACTIVE");
    assert_ledger_invariants(&app.pool).await
}

/// A member's lots as (remaining, expired, expire time) in spending order, from the database.
async fn lots_of(
    app: &crate::helpers::TestApp,
    member_id: &str,
) -> anyhow::Result<Vec<(i64, i64, Option<chrono::DateTime<chrono::Utc>>)>> {
    Ok(sqlx::query_as(
        "SELECT remaining_points, expired_points, expire_time FROM point_lots \
         WHERE member_id = $1::uuid ORDER BY expire_time NULLS LAST, earn_time, point_lot_id",
    )
    .bind(member_id)
    .fetch_all(&app.pool)
    .await?)
}

#[tokio::test]
async fn a_reward_redeemed_before_a_merge_and_reversed_after_it_pays_the_survivor()
-> anyhow::Result<()> {
    use chrono::Duration;
    use custops_contracts::custops::profiles::v1::CustomerUnmerged;

    // Arrange: the source spends its first lot whole on a reward, keeps a second one, and is
    // merged into the target, which takes the second lot only.
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 365))
        .await?;
    let mut client = app.client.clone();
    let reward = app
        .create_reward(&program_id, "Coffee voucher", 200, 5)
        .await?;
    let (source_customer, target_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let enrol = |customer: Uuid| pb::EnrolMemberRequest {
        request_id: rid(),
        program_id: program_id.clone(),
        customer_id: customer.to_string(),
        enrol_channel: String::new(),
    };
    let source = client
        .enrol_member(enrol(source_customer))
        .await?
        .into_inner()
        .member
        .unwrap_or_default()
        .member_id;
    let target = client
        .enrol_member(enrol(target_customer))
        .await?
        .into_inner()
        .member
        .unwrap_or_default()
        .member_id;
    app.grant(&source, 200).await?;
    let first_lot = lots_of(&app, &source).await?;
    app.clock.advance(Duration::days(10));
    app.grant(&source, 100).await?;
    app.grant(&target, 50).await?;
    let redeemed = client
        .redeem_reward(pb::RedeemRewardRequest {
            request_id: rid(),
            member: by_id(&source),
            reward_id: reward.reward_id.clone(),
            quantity: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    app.clock.advance(Duration::days(10));
    deliver(
        &app,
        &merged_event("merge-r", source_customer, target_customer),
    )
    .await?;
    assert_eq!(lots_of(&app, &source).await?, [(0, 0, first_lot[0].2)]);

    // Act: the reward comes back after the merge.
    app.clock.advance(Duration::days(10));
    let reversed = client
        .reverse_reward_redemption(pb::ReverseRewardRedemptionRequest {
            request_id: rid(),
            reward_redemption_id: redeemed
                .reward_redemption
                .unwrap_or_default()
                .reward_redemption_id,
            reason: "Voucher unused".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();

    // Assert: the survivor holds the 200 points in a lot of its own that expires when the
    // spent lot would have; the merged-away member's spent lot stays empty.
    assert_eq!(
        reversed.member.map(|m| m.member_id),
        Some(target.clone()),
        "a merged member's reversal lands on the survivor"
    );
    assert_eq!(app.balances(&target).await?.available_points, 350);
    assert_eq!(app.balances(&source).await?.available_points, 0);
    assert_eq!(lots_of(&app, &source).await?, [(0, 0, first_lot[0].2)]);
    let survivor_lots = lots_of(&app, &target).await?;
    assert!(
        survivor_lots.contains(&(200, 0, first_lot[0].2)),
        "{survivor_lots:?}"
    );
    assert_eq!(
        survivor_lots.iter().map(|l| l.0).sum::<i64>(),
        350,
        "{survivor_lots:?}"
    );
    assert_ledger_invariants(&app.pool).await?;

    // The restored points were the source's: an unmerge gives them back with its other lot.
    deliver(
        &app,
        &feed_event(&CustomerUnmerged {
            merge_id: "merge-r".to_owned(),
            source_customer_id: source_customer.to_string(),
            target_customer_id: target_customer.to_string(),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(app.balances(&source).await?.available_points, 300);
    assert_eq!(app.balances(&target).await?.available_points, 50);
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn a_redeem_before_a_merge_reversed_in_parts_after_it_refills_one_survivor_lot()
-> anyhow::Result<()> {
    use chrono::Duration;

    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 30))
        .await?;
    let mut client = app.client.clone();
    let (source_customer, target_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let enrol = |customer: Uuid| pb::EnrolMemberRequest {
        request_id: rid(),
        program_id: program_id.clone(),
        customer_id: customer.to_string(),
        enrol_channel: String::new(),
    };
    let source = client
        .enrol_member(enrol(source_customer))
        .await?
        .into_inner()
        .member
        .unwrap_or_default()
        .member_id;
    let target = client
        .enrol_member(enrol(target_customer))
        .await?
        .into_inner()
        .member
        .unwrap_or_default()
        .member_id;
    app.grant(&source, 120).await?;
    let redeem_request = redeem(rid(), &source, 120);
    client.redeem_points(redeem_request.clone()).await?;
    deliver(
        &app,
        &merged_event("merge-p", source_customer, target_customer),
    )
    .await?;

    let reverse = |points: i64| pb::ReversePointsRequest {
        request_id: rid(),
        target: Some(pb::reverse_points_request::Target::OriginalRequestId(
            redeem_request.request_id.clone(),
        )),
        amount: Some(pb::reverse_points_request::Amount::Points(points)),
        ..Default::default()
    };
    client.reverse_points(reverse(50)).await?;
    client.reverse_points(reverse(40)).await?;
    assert_eq!(app.balances(&target).await?.available_points, 90);
    assert_eq!(lots_of(&app, &target).await?.len(), 1, "one restored lot");
    assert_ledger_invariants(&app.pool).await?;

    // The lot keeps the spent lot's expiry: what is left of the redemption after that comes
    // back expired, and the restored points expire with it.
    app.clock.advance(Duration::days(31));
    let last = client.reverse_points(reverse(30)).await?.into_inner();
    let entry = last.ledger_entry.unwrap_or_default();
    assert_eq!(
        entry.available_points_delta, 0,
        "the last 30 points had expired"
    );
    assert_eq!(app.balances(&target).await?.available_points, 0);
    let survivor_lots = lots_of(&app, &target).await?;
    assert_eq!(
        survivor_lots.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
        [(0, 120)]
    );
    assert_eq!(
        lots_of(&app, &source)
            .await?
            .iter()
            .map(|l| l.1)
            .sum::<i64>(),
        0
    );
    assert_ledger_invariants(&app.pool).await
}
