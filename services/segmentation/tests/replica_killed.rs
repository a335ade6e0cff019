//! Two `custops-segmentation` processes follow one profiles feed on one database, and one is
//! killed with SIGKILL in the middle of a batch (issue 20, item 2): the survivor applies the
//! rest, and the killed process's batch is applied exactly once — not lost (its cursor and
//! its effects commit together, so neither did), not doubled.
//!
//! The kill lands mid-batch by construction, not by timing: the test holds the advisory lock
//! segmentation takes on a customer before writing their facts
//! (`store::facts::lock_customers`), so the first process's consumer stops inside the batch
//! that holds that customer's purchase, with the cursor row locked, until the test lets go.
//! The process is killed there; only then is the lock released, and its database session,
//! finding its client gone, rolls the batch back. Run directly and through a PgBouncer in
//! transaction pooling mode (issue 20, item 4).

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_testkit::pgbouncer::TestPgBouncer;
use custops_testkit::{TestDatabase, eventually};
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A bound on waiting for a process or a feed on a loaded 2-core machine, not a claim about
/// speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Purchases each customer makes in each of the two bursts.
const PURCHASES: usize = 25;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where a replica's requests go: the database itself, or a PgBouncer in front of it.
#[derive(Clone, Copy)]
enum Connected<'a> {
    Directly,
    Through(&'a TestPgBouncer),
}

/// One `custops-segmentation` process following profiles at `profiles_url`, its log in a
/// file (named in failures) rather than in the test's output.
struct Replica {
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    /// Starts the binary and waits until it serves. Its lock and statement timeouts are far
    /// above the test's waits: a batch held on the test's lock must still be in flight when
    /// the process is killed, not given up by Postgres.
    async fn start(
        name: &str,
        db: &TestDatabase,
        connected: Connected<'_>,
        profiles_url: &str,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("{}-{name}.log", db.name()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_custops-segmentation"));
        command.env_clear();
        match connected {
            Connected::Directly => command.env("DATABASE_URL", db.url()),
            Connected::Through(pooler) => command
                .env("DATABASE_URL", pooler.url("segmentation", "postgres"))
                .env("DATABASE_DIRECT_URL", db.url()),
        };
        let child = command
            .env("CUSTOPS_AUTH_MODE", "disabled")
            .env("CUSTOPS_LISTEN_HOST", "127.0.0.1")
            .env("CUSTOPS_SEGMENTATION_PORT", port.to_string())
            .env("CUSTOPS_PROFILES_URL", profiles_url)
            .env("CUSTOPS_DB_LOCK_TIMEOUT_MS", "120000")
            .env("CUSTOPS_DB_STATEMENT_TIMEOUT_MS", "180000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let serving = eventually(PATIENCE, || {
            let url = url.clone();
            async move {
                let Ok(channel) = Channel::from_shared(url) else {
                    return false;
                };
                let Ok(channel) = channel.connect().await else {
                    return false;
                };
                EventFeedServiceClient::new(channel)
                    .get_feed_position(common::GetFeedPositionRequest {})
                    .await
                    .is_ok()
            }
        })
        .await;
        anyhow::ensure!(serving, "{name} never served; log: {}", log.display());
        Ok(Self { child, log })
    }
}

/// Segmentation's stored cursor on the profiles feed (0 before it has one).
async fn cursor(db: &mut PgConnection) -> anyhow::Result<i64> {
    let stored: Option<i64> = sqlx::query_scalar(
        "SELECT last_sequence FROM segmentation.feed_cursors WHERE feed = 'profiles'",
    )
    .fetch_optional(db)
    .await?;
    Ok(stored.unwrap_or(0))
}

/// The profiles feed's newest position.
async fn head(db: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(sequence), 0) FROM profiles.outbox")
            .fetch_one(db)
            .await?,
    )
}

/// What segmentation applied of `customer_id`'s purchases: stored activities, RFM frequency,
/// and the last profiles position recorded on their facts.
async fn applied(db: &mut PgConnection, customer_id: &str) -> anyhow::Result<(i64, i64, i64)> {
    let activities: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM segmentation.customer_activities WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(&mut *db)
    .await?;
    let facts: Option<(i64, i64)> = sqlx::query_as(
        "SELECT rfm_frequency, profiles_sequence FROM segmentation.customer_facts \
         WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(&mut *db)
    .await?;
    let (frequency, position) = facts.unwrap_or((0, 0));
    Ok((activities, frequency, position))
}

/// The position of `customer_id`'s last event on the profiles feed.
async fn last_event_of(db: &mut PgConnection, customer_id: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(max(sequence), 0) FROM profiles.outbox WHERE aggregateid = $1",
    )
    .bind(customer_id)
    .fetch_one(db)
    .await?)
}

/// Whether some transaction holds segmentation's profiles cursor row: a batch is in flight.
async fn cursor_locked(db: &mut PgConnection) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    let locked = sqlx::query(
        "SELECT 1 FROM segmentation.feed_cursors WHERE feed = 'profiles' FOR UPDATE NOWAIT",
    )
    .execute(&mut *tx)
    .await
    .is_err();
    tx.rollback().await?;
    Ok(locked)
}

/// Segmentation sessions waiting on a lock that the session `holder` holds.
async fn waiting_on(db: &mut PgConnection, holder: i32) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name LIKE 'custops-segmentation%' \
           AND $1 = ANY(pg_blocking_pids(pid))",
    )
    .bind(holder)
    .fetch_one(db)
    .await?)
}

async fn create_customer(client: &mut ProfilesServiceClient<Channel>) -> anyhow::Result<String> {
    Ok(client
        .create_customer(profiles::CreateCustomerRequest {
            customer: Some(profiles::Customer {
                given_name: "Replica".to_owned(),
                identities: vec![profiles::Identity {
                    identity_type: profiles::IdentityType::Email.into(),
                    value: format!("{}@example.com", uuid::Uuid::now_v7()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default()
        .customer_id)
}

fn purchase(customer_id: &str, order: &str) -> profiles::RecordActivityRequest {
    profiles::RecordActivityRequest {
        activity: Some(profiles::Activity {
            customer_id: customer_id.to_owned(),
            source: "order_service".to_owned(),
            event_id: order.to_owned(),
            occur_time: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() - 60,
                nanos: 0,
            }),
            channel: "web".to_owned(),
            details: Some(profiles::activity::Details::Purchase(profiles::Purchase {
                order_id: order.to_owned(),
                amount: Some(common::Money {
                    amount_minor: 1000,
                    currency: "CNY".to_owned(),
                }),
                categories: vec!["shoes".to_owned()],
                item_count: 1,
            })),
            ..Default::default()
        }),
        customer_identity: None,
    }
}

/// Each customer's purchases of `burst`, one round of all customers at a time, so every
/// batch of the feed holds several customers.
async fn record_burst(
    client: &mut ProfilesServiceClient<Channel>,
    customers: &[String],
    burst: usize,
) -> anyhow::Result<()> {
    for n in 0..PURCHASES {
        for customer_id in customers {
            client
                .record_activity(purchase(customer_id, &format!("{customer_id}-{burst}-{n}")))
                .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_replica_killed_mid_batch_leaves_the_batch_to_the_other_applied_once()
-> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    killed_mid_batch(&db, Connected::Directly).await
}

/// The same with both processes' requests through a PgBouncer in transaction pooling mode:
/// the killed client's server connection, mid-transaction, is closed by the pooler, never
/// handed to another client with the batch half done.
#[tokio::test]
async fn through_pgbouncer_a_replica_killed_mid_batch_leaves_the_batch_to_the_other()
-> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    // The timeouts a replica would set itself (see `Replica::start`), set by the pooler.
    let pooler = TestPgBouncer::start(
        &[("segmentation", db.url())],
        &[("lock_timeout", "120000"), ("statement_timeout", "180000")],
    )
    .await?;
    killed_mid_batch(&db, Connected::Through(&pooler)).await
}

async fn killed_mid_batch(db: &TestDatabase, connected: Connected<'_>) -> anyhow::Result<()> {
    // Arrange: profiles in-process, five customers with a first burst of purchases, and the
    // first segmentation process, which applies it.
    let stop_profiles = CancellationToken::new();
    let profiles_app =
        custops_profiles::build(ServiceSettings::for_local(ServiceKind::Profiles, db.url()))
            .await?;
    let profiles_url = format!("http://127.0.0.1:{}", profiles_app.port());
    tokio::spawn({
        let stop = stop_profiles.clone();
        async move { profiles_app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let mut client = ProfilesServiceClient::connect(profiles_url.clone()).await?;
    let mut customers = Vec::new();
    for _ in 0..5 {
        customers.push(create_customer(&mut client).await?);
    }
    record_burst(&mut client, &customers, 1).await?;
    let mut first = Replica::start("first", db, connected, &profiles_url).await?;
    let mut admin = PgConnection::connect(db.url()).await?;
    let caught_up = eventually(PATIENCE, || {
        let url = db.url().to_owned();
        async move {
            let Ok(mut db) = PgConnection::connect(&url).await else {
                return false;
            };
            matches!((cursor(&mut db).await, head(&mut db).await), (Ok(c), Ok(h)) if c == h)
        }
    })
    .await;
    assert!(caught_up, "the first burst was never applied");
    for customer_id in &customers {
        assert_eq!(
            applied(&mut admin, customer_id).await?.0,
            i64::try_from(PURCHASES)?
        );
    }

    // Act: the test takes the lock segmentation needs to write the held customer's facts,
    // then a second burst is recorded: the first process stops inside the batch holding the
    // held customer's first new purchase, with the cursor row locked and the cursor past
    // the first burst but before the head.
    let held = customers[2].clone();
    let mut lock = PgConnection::connect(db.url()).await?;
    let lock_holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut lock)
        .await?;
    sqlx::query(
        "SELECT pg_advisory_lock(hashtextextended('custops.segmentation.customer.' || $1, 0))",
    )
    .bind(&held)
    .execute(&mut lock)
    .await?;
    record_burst(&mut client, &customers, 2).await?;
    let mid_batch = eventually(PATIENCE, || {
        let url = db.url().to_owned();
        async move {
            let Ok(mut db) = PgConnection::connect(&url).await else {
                return false;
            };
            let (Ok(waiting), Ok(locked)) = (
                waiting_on(&mut db, lock_holder).await,
                cursor_locked(&mut db).await,
            ) else {
                return false;
            };
            waiting > 0 && locked
        }
    })
    .await;
    assert!(
        mid_batch,
        "the first process never stopped inside a batch; log: {}",
        first.log.display()
    );
    let (before_kill, latest) = (cursor(&mut admin).await?, head(&mut admin).await?);
    assert!(
        0 < before_kill && before_kill < latest,
        "cursor {before_kill}, head {latest}"
    );
    assert_eq!(
        applied(&mut admin, &held).await?.0,
        i64::try_from(PURCHASES)?,
        "nothing of the held batch committed"
    );

    // The second process starts and follows the same feed (its consumer waits on the cursor
    // row the first one holds); then the first is killed, SIGKILL, mid-batch.
    let mut second = Replica::start("second", db, connected, &profiles_url).await?;
    first.child.kill().await?;
    let killed = first.child.wait().await?;
    assert_eq!(killed.signal(), Some(9), "{killed:?}");
    // The killed batch is still open in its session: nothing moved.
    assert_eq!(cursor(&mut admin).await?, before_kill);
    assert_eq!(
        applied(&mut admin, &held).await?.0,
        i64::try_from(PURCHASES)?
    );
    sqlx::query(
        "SELECT pg_advisory_unlock(hashtextextended('custops.segmentation.customer.' || $1, 0))",
    )
    .bind(&held)
    .execute(&mut lock)
    .await?;

    // Assert: the second process applies everything after the cursor, the killed batch
    // included, each purchase once.
    let latest = head(&mut admin).await?;
    let all_applied = eventually(PATIENCE, || {
        let url = db.url().to_owned();
        async move {
            let Ok(mut db) = PgConnection::connect(&url).await else {
                return false;
            };
            matches!(cursor(&mut db).await, Ok(c) if c >= latest)
        }
    })
    .await;
    assert!(
        all_applied,
        "the second process never applied the rest; log: {}",
        second.log.display()
    );
    for customer_id in &customers {
        let expected = i64::try_from(2 * PURCHASES)?;
        let last = last_event_of(&mut admin, customer_id).await?;
        assert_eq!(
            applied(&mut admin, customer_id).await?,
            (expected, expected, last),
            "customer {customer_id} (held: {})",
            *customer_id == held
        );
    }
    second.child.kill().await?;
    stop_profiles.cancel();
    // Kept when the test fails, to be read.
    std::fs::remove_file(&first.log)?;
    std::fs::remove_file(&second.log)?;
    Ok(())
}
