//! Program time zones: an IANA name is required, and birthday months and expiring-point days
//! are judged in it rather than in UTC.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc};
use custops_common::consumer::EventHandler;
use custops_contracts::custops::common::v1::{Date, Event};
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::profiles::v1::{CustomerTraits, CustomerUpdated, Demographics};
use custops_loyalty::domain::Clock;
use custops_loyalty::feeds::profiles::ProfilesFeed;
use prost::{Message, Name};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, bad_fields, by_id, cny, program, rid, spawn_app};

fn shanghai_program(expire_after_days: i32) -> pb::Program {
    let mut p = program(pb::ClawbackPolicy::WithinBalance, expire_after_days);
    p.time_zone = "Asia/Shanghai".to_owned();
    p
}

fn ts(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

/// Tells loyalty, through its profiles feed handler, that `customer` was born in `month`.
async fn born_in(app: &TestApp, customer: Uuid, month: i32) -> anyhow::Result<()> {
    let payload = CustomerUpdated {
        traits: Some(CustomerTraits {
            customer_id: customer.to_string(),
            demographics: Some(Demographics {
                birth_date: Some(Date {
                    year: 1990,
                    month,
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
    ProfilesFeed::new(app.clock.clone())
        .handle(&mut tx, &event)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::test]
async fn an_unknown_time_zone_is_refused_naming_the_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    for zone in ["Mars/Olympus_Mons", "UTC+8", "asia/shanghai"] {
        let mut p = program(pb::ClawbackPolicy::WithinBalance, 0);
        p.time_zone = zone.to_owned();
        let refused = client
            .create_program(pb::CreateProgramRequest {
                request_id: rid(),
                program: Some(p),
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{zone} was accepted"))?;
        assert_eq!(refused.code(), Code::InvalidArgument, "{zone}");
        assert_eq!(bad_fields(&refused), ["program.time_zone"], "{zone}");
    }
    let id = app.create_program(shanghai_program(0)).await?;
    let etag = client
        .get_program(pb::GetProgramRequest {
            program_id: id.clone(),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default()
        .etag;
    let update = |zone: &str, etag: String| pb::UpdateProgramRequest {
        program: Some(pb::Program {
            program_id: id.clone(),
            time_zone: zone.to_owned(),
            etag,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["time_zone".to_owned()],
        }),
    };
    let refused = client
        .update_program(update("Europe/Atlantis", etag.clone()))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("unknown zone"))?;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["program.time_zone"]);
    let updated = client
        .update_program(update("Europe/Berlin", etag))
        .await?
        .into_inner()
        .program
        .unwrap_or_default();
    assert_eq!(updated.time_zone, "Europe/Berlin");
    Ok(())
}

#[tokio::test]
async fn the_birthday_month_is_judged_in_the_program_time_zone() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut p = shanghai_program(0);
    if let Some(rules) = p.earning_rules.as_mut() {
        rules.birthday_multiplier_percent = 200;
    }
    let program_id = app.create_program(p).await?;
    let mut client = app.client.clone();
    let customer = Uuid::now_v7();
    born_in(&app, customer, 2).await?;
    let member = client
        .enrol_member(pb::EnrolMemberRequest {
            request_id: rid(),
            program_id,
            customer_id: customer.to_string(),
            enrol_channel: String::new(),
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default()
        .member_id;
    // Both purchases are at 01:00 in Shanghai: the first on 1 February (still January in
    // UTC), the second on 1 March (still February in UTC).
    let year = app.clock.now().year() - 1;
    let feb_1_shanghai = Utc.with_ymd_and_hms(year, 1, 31, 17, 0, 0).single();
    let mar_1_shanghai = Utc.with_ymd_and_hms(year, 2, 28, 17, 0, 0).single();
    let mut earned = Vec::new();
    for (i, at) in [feb_1_shanghai, mar_1_shanghai].into_iter().enumerate() {
        let entry = client
            .earn_points(pb::EarnPointsRequest {
                request_id: rid(),
                member: by_id(&member),
                source: Some(pb::earn_points_request::Source::Purchase(pb::Purchase {
                    order_id: format!("tz-{i}"),
                    amount: Some(cny(10_000)),
                    purchase_time: at.map(ts),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .await?
            .into_inner()
            .ledger_entry
            .unwrap_or_default();
        earned.push(entry.points);
    }
    assert_eq!(earned, [200, 100], "the bonus follows Shanghai's calendar");
    Ok(())
}

#[tokio::test]
async fn expiring_points_are_counted_per_day_in_the_program_time_zone() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app.create_program(shanghai_program(0)).await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    // 20:00 UTC ten days from now is 04:00 the next day in Shanghai.
    let day = (app.clock.now() + Duration::days(10)).date_naive();
    let at = day
        .and_time(NaiveTime::from_hms_opt(20, 0, 0).unwrap_or_default())
        .and_utc();
    client
        .earn_points(pb::EarnPointsRequest {
            request_id: rid(),
            member: by_id(&member),
            source: Some(pb::earn_points_request::Source::Grant(pb::PointsGrant {
                points: 70,
                qualifying: false,
                expire_time: Some(ts(at)),
            })),
            reason: "Goodwill".to_owned(),
            ..Default::default()
        })
        .await?;
    let expiring = client
        .get_expiring_points(pb::GetExpiringPointsRequest {
            member: by_id(&member),
            within_days: 30,
        })
        .await?
        .into_inner();
    let next_day = day + Duration::days(1);
    let days: Vec<_> = expiring
        .days
        .iter()
        .map(|d| (d.date.unwrap_or_default(), d.points))
        .collect();
    assert_eq!(
        days,
        [(
            Date {
                year: next_day.year(),
                month: i32::try_from(next_day.month())?,
                day: i32::try_from(next_day.day())?,
            },
            70
        )]
    );
    assert_eq!(expiring.total_points, 70);
    Ok(())
}
