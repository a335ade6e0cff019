//! Two replicas of every service on one database (issue 20, item 2): customers' traces left
//! through either replica are applied once by the feed consumers, whichever replica's consumer
//! takes a batch (they share one cursor row per feed, locked for the batch); each survey
//! reward is paid once whichever replica's worker leases it; a request id
//! replayed to the other replica answers the first reply; and when one replica stops in the
//! middle of a burst, the other applies the rest, each event once. (Segmentation's handlers
//! also keep each customer's feed positions, so a double application needs both guards to
//! fail; what is checked is the outcome, exactly-once effects.)

use std::time::Duration;

use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_e2e::{PROPAGATION, TestSuite, eventually, hours_ago, rid};
use sqlx::{Connection, PgConnection};

/// The facts of a customer that count events, as segmentation stores them: purchases (RFM
/// frequency) and open tickets. Applied twice, they would double.
async fn counted_facts(db: &mut PgConnection, customer_id: &str) -> anyhow::Result<(i64, i32)> {
    let row: Option<(i64, i32)> = sqlx::query_as(
        "SELECT rfm_frequency, open_ticket_count FROM segmentation.customer_facts \
         WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(db)
    .await?;
    Ok(row.unwrap_or((0, 0)))
}

/// How many activities segmentation holds for `customer_id`.
async fn stored_activities(db: &mut PgConnection, customer_id: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM segmentation.customer_activities WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(db)
    .await?)
}

fn visit(customer_id: &str, n: usize) -> profiles::RecordActivityRequest {
    profiles::RecordActivityRequest {
        activity: Some(profiles::Activity {
            customer_id: customer_id.to_owned(),
            source: "web".to_owned(),
            event_id: format!("view-{n}"),
            occur_time: Some(hours_ago(2)),
            channel: "web".to_owned(),
            details: Some(profiles::activity::Details::Interaction(
                profiles::Interaction {
                    interaction_kind: profiles::InteractionKind::Visit as i32,
                    page: format!("/products/{n}"),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        customer_identity: None,
    }
}

/// One two-replica suite at a time: each is eight services' pools on one Postgres, whose
/// `max_connections` the other tests share.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn two_replicas_of_every_service_apply_each_feed_event_once_and_answer_replays_alike()
-> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    two_replicas_of_every_service(TestSuite::start().await?).await
}

/// The same through a PgBouncer in transaction pooling mode: every request, feed batch, job
/// and reward lease of both replicas through the pooler, LISTEN and migrations on the direct
/// URL (ARCHITECTURE.md, "Postgres behind a pooler"). A statement a service ran outside a
/// transaction would fail here (the pooler resets server connections after every one).
#[tokio::test]
async fn through_pgbouncer_two_replicas_of_every_service_apply_each_feed_event_once()
-> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    two_replicas_of_every_service(TestSuite::start_behind_pgbouncer(false).await?).await
}

/// The same through PgBouncer with each service on a database of its own
/// (`CUSTOPS_<SVC>_DATABASE_URL`): the services meet only over gRPC and their feeds.
#[tokio::test]
async fn through_pgbouncer_each_service_on_its_own_database_at_two_replicas() -> anyhow::Result<()>
{
    let _turn = ONE_AT_A_TIME.lock().await;
    two_replicas_of_every_service(TestSuite::start_behind_pgbouncer(true).await?).await
}

/// Two replicas of every service on `suite`'s databases: feed events applied once, rewards
/// paid once, a replay answered alike by the other replica, one replica stopped mid-burst.
async fn two_replicas_of_every_service(suite: TestSuite) -> anyhow::Result<()> {
    // Arrange: a second replica of each service on its database.
    let replica = suite.start_replica().await?;
    let mut first = suite.clients().await?;
    let mut second = custops_e2e::clients(&replica).await?;
    let world = first.world().await?;
    let segmentation_url = suite
        .database_of(ServiceKind::Segmentation)
        .url()
        .to_owned();
    let loyalty_url = suite.database_of(ServiceKind::Loyalty).url().to_owned();
    let mut db = PgConnection::connect(&segmentation_url).await?;
    let mut loyalty_db = PgConnection::connect(&loyalty_url).await?;

    // Act: six customers, each created and given traces in every service (a purchase, a
    // membership with points, a detractor answer with its follow-up ticket, a complaint, a
    // review) through one replica or the other, alternately.
    let mut customers = Vec::new();
    for i in 0..6 {
        let clients = if i % 2 == 0 { &mut first } else { &mut second };
        let customer_id = clients
            .create_customer(&format!("replica{i}@example.com"))
            .await?;
        clients
            .leave_traces(&world, &customer_id, &format!("replica{i}"))
            .await?;
        customers.push(customer_id);
    }

    // Assert: segmentation applied every customer's purchase and both tickets.
    let applied = eventually(PROPAGATION, || {
        let customers = customers.clone();
        let url = segmentation_url.clone();
        async move {
            let mut db = PgConnection::connect(&url).await?;
            for customer_id in &customers {
                if counted_facts(&mut db, customer_id).await? != (1, 2) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await;
    assert!(
        applied,
        "segmentation never applied every customer's traces"
    );
    // Once, not twice: a second application by the other replica's consumer would have
    // doubled the counts by now (both consumers poll their feeds every few milliseconds).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for customer_id in &customers {
        assert_eq!(
            counted_facts(&mut db, customer_id).await?,
            (1, 2),
            "customer {customer_id}"
        );
        assert_eq!(stored_activities(&mut db, customer_id).await?, 1);
    }

    // Act: a rewarded survey answered by every customer through either replica; both
    // replicas' reward workers lease due rewards.
    let rewarded = first
        .nps_survey(
            "Rewarded",
            Some(feedback::SurveyReward {
                points: 5,
                program_id: world.program_id.clone(),
            }),
        )
        .await?;
    for (i, customer_id) in customers.iter().enumerate() {
        let clients = if i % 2 == 0 { &mut first } else { &mut second };
        clients
            .answer_nps(&rewarded, customer_id, &format!("rewarded-{i}"), 9)
            .await?;
    }

    // Assert: each reward earned once in loyalty.
    let rewards = || {
        let url = loyalty_url.clone();
        async move {
            let mut db = PgConnection::connect(&url).await?;
            let earned: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM loyalty.ledger_entries \
                 WHERE request_id LIKE 'feedback-survey-reward-%' AND points = 5",
            )
            .fetch_one(&mut db)
            .await?;
            anyhow::Ok(earned)
        }
    };
    let paid = eventually(PROPAGATION, || async {
        Ok(rewards().await? >= i64::try_from(customers.len())?)
    })
    .await;
    assert!(paid, "the survey rewards were never all paid");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rewards().await?, i64::try_from(customers.len())?);

    // Act: one earn, then its request id replayed to the other replica.
    let member_id: String = sqlx::query_scalar(
        "SELECT member_id::text FROM loyalty.members WHERE customer_id = $1::uuid",
    )
    .bind(&customers[0])
    .fetch_one(&mut loyalty_db)
    .await?;
    let earn = loyalty::EarnPointsRequest {
        request_id: rid(),
        member: Some(loyalty::MemberRef {
            key: Some(loyalty::member_ref::Key::MemberId(member_id.clone())),
        }),
        source: Some(loyalty::earn_points_request::Source::Grant(
            loyalty::PointsGrant {
                points: 7,
                ..Default::default()
            },
        )),
        reason: "replica replay".to_owned(),
        ..Default::default()
    };
    let answered = first.loyalty.earn_points(earn.clone()).await?.into_inner();
    let replayed = second.loyalty.earn_points(earn).await?.into_inner();

    // Assert: the same reply, one entry.
    assert_eq!(replayed, answered);
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM loyalty.ledger_entries WHERE member_id = $1::uuid AND points = 7",
    )
    .bind(&member_id)
    .fetch_one(&mut loyalty_db)
    .await?;
    assert_eq!(entries, 1);

    // Act: a burst of visits for one customer through the first replica, and the second
    // replica stopped halfway, while they are being applied.
    let busy = customers[1].clone();
    let burst = 200;
    for n in 0..burst / 2 {
        first.profiles.record_activity(visit(&busy, n)).await?;
    }
    replica.stop().await?;
    for n in burst / 2..burst {
        first.profiles.record_activity(visit(&busy, n)).await?;
    }

    // Assert: the first replica applied the rest, each once (the purchase and 200 visits).
    let expected = i64::try_from(burst)? + 1;
    let caught_up = eventually(PROPAGATION, || {
        let url = segmentation_url.clone();
        let busy = busy.clone();
        async move {
            let mut db = PgConnection::connect(&url).await?;
            Ok(stored_activities(&mut db, &busy).await? >= expected)
        }
    })
    .await;
    assert!(caught_up, "the remaining replica never applied the burst");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored_activities(&mut db, &busy).await?, expected);
    assert_eq!(counted_facts(&mut db, &busy).await?, (1, 2));
    suite.stop().await
}
