//! Segmentation at scale: `segmentation.recompute`, `segmentation.recompute_events` and
//! `segmentation.recompute_all` (a recompute job over the scale fixture, of a rule over
//! activities, of a rule over custom events, of everything, against the hand-written SQL of the
//! same work on the same data), `segmentation.predict_fit` and `segmentation.predict_refresh` (a prediction fit
//! over the base against reading its purchase days, and a feed batch's prediction refresh against
//! its RFM refresh; informational), `segmentation.apply` (events per second segmentation applies from profiles'
//! feed against profiles' own ingest rate of the same events), `segmentation.apply_flat` (that
//! rate at the full customer base against a 10,000-customer one) and `segmentation.freshness`
//! (RecordActivity → CheckMembership true, p99, while profiles' feed runs at half the apply
//! rate, against the same probes on an idle feed) and `segmentation.apply_events` (events per
//! second segmentation applies of custom events of twenty types, against profiles' own ingest
//! rate of the same events).
//!
//! How: the customers the events are about are created in profiles first (timed, part of
//! profiles' ingest), and the scale fixture (`custops_segmentation::fixture`) then loads the
//! customer base into each segmentation database directly, those customers included, with
//! histories of two years and about one custom event each of twenty types; the rule segments
//! (`rules`: fifty over activities and attributes, four over custom events) are created through
//! the API before the load, so the first recompute of each moves every member in. With RecomputeSegment and
//! RecomputeAll done (the second also scores RFM and lifecycle and stores the bounds, as a
//! running deployment has them), the activities are recorded in profiles (timed); only then is
//! each segmentation child started following profiles' feed from its beginning, and the time
//! its cursor (`feed_cursors`, feed `profiles`) takes to reach profiles' last sequence gives
//! its apply rate over exactly the events profiles ingested. Last, the twenty event types are
//! declared in profiles (CreateEventType) and custom events of them recorded for the same
//! customers (timed), and a segmentation child follows the feed again from where it stopped:
//! `segmentation.apply_events`.
//!
//! Checked afterwards, failing the group when wrong: after RecomputeAll every rule segment's
//! memberships equal the hand-written SQL's members; after the feed every activity profiles
//! recorded (up to where segmentation got) is in `customer_activities` exactly once, and the
//! memberships of every customer the events touched equal the hand-written SQL's; after the
//! custom events, likewise every custom event in `customer_events` exactly once and the
//! memberships of the customers they are about.

pub mod feed;
pub mod rules;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_segmentation::domain::lifecycle::LifecycleConfig;
use custops_segmentation::domain::rfm::RfmConfig;
use custops_segmentation::fixture::{EVENT_TYPES, Fixture, Loaded};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};
use tonic::transport::Channel;
use uuid::Uuid;

use super::child::{Child, service_env};
use super::database::BenchDatabase;
use super::load::{self, Connections, LatencyFrom, Samples, Window};
use super::report::Row;
use super::{Harness, finished};
use rules::{EVENT_RECOMPUTED, PROBE_CATEGORY, RECOMPUTED, RuleSpec};

/// The fixture's seed: every run loads the same customer base.
const SEED: u32 = 2026;

/// The evaluation settings' longest rollover interval, so no rollover pass runs while the
/// benchmarks measure (the longest run is well under an hour).
const ROLLOVER_SECS: i64 = 3600;

/// Open-loop background calls in flight at most.
const MAX_IN_FLIGHT: usize = 2_000;

/// Activities per ImportActivities stream of the freshness background: about twenty streams a
/// second at the rates measured, so the feed fills evenly rather than in bursts.
const IMPORT_PER_CALL: usize = 25;

/// The rows of this group, in the order they are produced.
pub fn row_names() -> Vec<String> {
    [
        "segmentation.recompute",
        "segmentation.recompute_events",
        "segmentation.recompute_all",
        "segmentation.predict_fit",
        "segmentation.predict_refresh",
        "segmentation.apply",
        "segmentation.apply_flat",
        "segmentation.freshness",
        "segmentation.apply_events",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A connection to `url` that logs no statements: the benchmark's own statements are slow on
/// purpose, and sqlx would warn about each of them.
async fn open(url: &str, search_path: Option<&str>) -> anyhow::Result<PgConnection> {
    let mut options = PgConnectOptions::from_str(url)
        .context("a benchmark database URL does not parse")?
        .disable_statement_logging();
    if let Some(schema) = search_path {
        options = options.options([("search_path", schema)]);
    }
    PgConnection::connect_with(&options)
        .await
        .context("Failed to connect to a benchmark database")
}

/// A connection to a benchmark database in segmentation's schema.
async fn connect(db: &BenchDatabase) -> anyhow::Result<PgConnection> {
    open(db.url(), Some("segmentation")).await
}

/// A segmentation child on `db`, following profiles at `profiles` when given.
async fn start_segmentation(
    harness: &Harness,
    db: &BenchDatabase,
    name: &str,
    profiles: Option<SocketAddr>,
) -> anyhow::Result<Child> {
    let mut env = service_env(db.url(), harness.redis_url.as_deref());
    if let Some(addr) = profiles {
        env.push(("CUSTOPS_PROFILES_URL".to_owned(), format!("http://{addr}")));
    }
    let serve = ["bench-serve".to_owned(), "segmentation".to_owned()];
    Child::start(name, &serve, &env, &harness.log_dir).await
}

async fn client(addr: SocketAddr) -> anyhow::Result<SegmentationServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("Failed to connect to {addr}"))?;
    Ok(SegmentationServiceClient::new(channel))
}

/// A segmentation database with its rule segments and the fixture loaded.
struct Prepared {
    db: BenchDatabase,
    segment_ids: Vec<Uuid>,
    loaded: Loaded,
    load_time: Duration,
}

/// A finished recompute job: its own start-to-end time and how long the caller waited.
struct Job {
    job: pb::RecomputeJob,
    seconds: f64,
    waited: Duration,
}

/// Waits until segmentation on `db` has no follow-up work left from what came before, so that
/// the next timed phase does not share the two cores with it: no recompute job queued or
/// running, every event of its outbox sequenced (the sequencer numbers a recompute's hundreds
/// of thousands after its commit), and the RFM run its scheduler queues for a base with
/// purchases but no bounds finished (its bounds stored: the job may not be queued yet, the
/// scheduler queues it at its next tick). Then vacuums what the service rewrote, so that the
/// next phase and its baseline read the same clean tables, and checkpoints.
async fn settle(db: &BenchDatabase, timeout: Duration) -> anyhow::Result<()> {
    let mut connection = connect(db).await?;
    let started = Instant::now();
    loop {
        let (jobs, unsequenced, bounds): (bool, bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM recompute_jobs WHERE state IN ('queued', 'running')), \
                    EXISTS (SELECT 1 FROM outbox WHERE sequence IS NULL), \
                    NOT EXISTS (SELECT 1 FROM customer_activities WHERE kind = 'purchase') \
                      OR EXISTS (SELECT 1 FROM configs WHERE name = 'rfm' \
                         AND jsonb_typeof(value -> 'computed_thresholds') = 'object')",
        )
        .fetch_one(&mut connection)
        .await
        .context("Failed to read whether segmentation is settled")?;
        if !jobs && !unsequenced && bounds {
            // The rows the service just rewrote (an RFM run updates every customer's) carry
            // no hint bits and leave dead versions: whoever reads them next pays for that, and
            // the service's recompute comes before the hand-written baseline.
            sqlx::raw_sql("VACUUM (ANALYZE) customer_facts, memberships")
                .execute(&mut connection)
                .await
                .context("Failed to vacuum after settling")?;
            // And a checkpoint, so the next phase does not pay for flushing what this one
            // wrote (Postgres checkpoints every max_wal_size of WAL: with none, a phase that
            // happened to cross that line wrote for its predecessors).
            sqlx::raw_sql("CHECKPOINT")
                .execute(&mut connection)
                .await
                .context("Failed to checkpoint after settling")?;
            connection.close().await.ok();
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "segmentation did not settle within {timeout:?} (jobs active: {jobs}, events \
             unsequenced: {unsequenced}, RFM bounds computed: {bounds})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (polling every 20 ms) for the job to end; fails unless it succeeded.
async fn wait_job(
    client: &mut SegmentationServiceClient<Channel>,
    job_id: &str,
    requested: Instant,
    timeout: Duration,
) -> anyhow::Result<Job> {
    loop {
        let job = client
            .get_recompute_job(pb::GetRecomputeJobRequest {
                recompute_job_id: job_id.to_owned(),
            })
            .await
            .context("GetRecomputeJob failed")?
            .into_inner()
            .job
            .context("GetRecomputeJob answered no job")?;
        let state = job.state();
        if state == pb::RecomputeJobState::Succeeded {
            let time = |t: Option<&prost_types::Timestamp>| {
                t.map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
            };
            let seconds = match (time(job.start_time.as_ref()), time(job.end_time.as_ref())) {
                (Some(start), Some(end)) => end - start,
                _ => requested.elapsed().as_secs_f64(),
            };
            return Ok(Job {
                job,
                seconds,
                waited: requested.elapsed(),
            });
        }
        anyhow::ensure!(
            !matches!(
                state,
                pb::RecomputeJobState::Failed | pb::RecomputeJobState::Superseded
            ),
            "recompute job {job_id} ended {state:?}: {} (see the child's log)",
            job.error_message
        );
        anyhow::ensure!(
            requested.elapsed() < timeout,
            "recompute job {job_id} did not finish within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A database with segmentation migrated, no rollover while measuring, the rule segments of
/// `specs` created (their first recomputes, over no customers, finished), then `fixture`
/// loaded and vacuumed. The child is returned running, without a peer.
async fn prepare(
    harness: &Harness,
    name: &str,
    fixture: &Fixture,
    specs: &[RuleSpec],
) -> anyhow::Result<(Prepared, Child)> {
    let db = BenchDatabase::create(&harness.admin_database_url, name).await?;
    let child = start_segmentation(harness, &db, name, None).await?;
    let mut client = client(child.addr()).await?;
    client
        .update_evaluation_settings(pb::UpdateEvaluationSettingsRequest {
            evaluation_settings: Some(pb::EvaluationSettings {
                rollover_interval: Some(prost_types::Duration {
                    seconds: ROLLOVER_SECS,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rollover_interval".to_owned()],
            }),
        })
        .await
        .context("Failed to set the rollover interval")?;
    let mut connection = connect(&db).await?;
    fixture.define_attributes(&mut connection).await?;
    fixture.define_event_types(&mut connection).await?;
    let mut segment_ids = Vec::new();
    let mut jobs = Vec::new();
    for spec in specs {
        let created = client
            .create_segment(pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: spec.name.clone(),
                    kind: pb::SegmentKind::Rule.into(),
                    rule: Some(spec.rule.clone()),
                    ..Default::default()
                }),
                request_id: uuid::Uuid::now_v7().to_string(),
                validate_only: false,
            })
            .await
            .with_context(|| format!("Failed to create the segment {}", spec.name))?
            .into_inner();
        let segment = created
            .segment
            .context("CreateSegment answered no segment")?;
        segment_ids
            .push(Uuid::parse_str(&segment.segment_id).context("CreateSegment answered a bad id")?);
        jobs.push(created.recompute_job_id);
    }
    let started = Instant::now();
    for job in jobs.iter().filter(|job| !job.is_empty()) {
        wait_job(&mut client, job, started, harness.scale.job_timeout).await?;
    }
    eprintln!(
        "bench: {name}: {} rule segments created; loading {} customers with about {} activities",
        specs.len(),
        fixture.customers,
        fixture.activities
    );
    let started = Instant::now();
    let loaded = fixture.load(&mut connection).await?;
    sqlx::raw_sql("VACUUM (ANALYZE) customer_facts, customer_activities, customer_events")
        .execute(&mut connection)
        .await
        .context("Failed to vacuum the loaded tables")?;
    let load_time = started.elapsed();
    settle(&db, harness.scale.job_timeout).await?;
    eprintln!(
        "bench: {name}: loaded {} customers, {} activities and {} custom events in {:.1} s",
        loaded.customers,
        loaded.activities,
        loaded.custom_events,
        load_time.as_secs_f64()
    );
    connection.close().await.ok();
    Ok((
        Prepared {
            db,
            segment_ids,
            loaded,
            load_time,
        },
        child,
    ))
}

/// A RecomputeSegment and its hand-written baseline.
struct SegmentRecompute {
    job: Job,
    /// The time the hand-written statements took.
    hand: Duration,
    /// Members found (and checked equal to the memberships).
    members: i64,
}

/// RecomputeSegment of `segments[index]` on the fixture, waited for and settled, then its
/// hand-written members (checked equal to the memberships; see [`hand_recompute`]).
async fn recompute_segment(
    harness: &Harness,
    seg: &mut SegmentationServiceClient<Channel>,
    large: &Prepared,
    segments: &[(Uuid, &RuleSpec)],
    index: usize,
) -> anyhow::Result<SegmentRecompute> {
    let (segment_id, spec) = segments[index];
    let requested = Instant::now();
    let job = seg
        .recompute_segment(pb::RecomputeSegmentRequest {
            segment_id: segment_id.to_string(),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .context("RecomputeSegment failed")?
        .into_inner()
        .job
        .context("RecomputeSegment answered no job")?;
    let job = wait_job(
        seg,
        &job.recompute_job_id,
        requested,
        harness.scale.job_timeout,
    )
    .await?;
    settle(&large.db, harness.scale.job_timeout).await?;
    let what = format!("RecomputeSegment of {}", spec.name);
    let (hand, members) = hand_recompute(&large.db, &segments[index..=index], false, &what).await?;
    Ok(SegmentRecompute { job, hand, members })
}

/// The members of each of `segments`, by display name (a rule checked with no member
/// checks little).
async fn members_by_name(
    db: &BenchDatabase,
    segments: &[(Uuid, &RuleSpec)],
) -> anyhow::Result<Value> {
    let mut connection = connect(db).await?;
    let mut counts = serde_json::Map::new();
    for (segment_id, spec) in segments {
        let members: i64 =
            sqlx::query_scalar("SELECT count(*) FROM memberships WHERE segment_id = $1")
                .bind(segment_id)
                .fetch_one(&mut connection)
                .await
                .context("Failed to count a segment's members")?;
        counts.insert(spec.name.clone(), json!(members));
    }
    connection.close().await.ok();
    Ok(Value::Object(counts))
}

/// RecomputeAll, waited for.
async fn recompute_all(
    client: &mut SegmentationServiceClient<Channel>,
    timeout: Duration,
) -> anyhow::Result<Job> {
    let requested = Instant::now();
    let job = client
        .recompute_all(pb::RecomputeAllRequest {
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .context("RecomputeAll failed")?
        .into_inner()
        .job
        .context("RecomputeAll answered no job")?;
    wait_job(client, &job.recompute_job_id, requested, timeout).await
}

/// The hand-written scratch table: shaped like `memberships` (its columns, primary key,
/// customer index and foreign key to `segments`), so the baseline stores the same rows the
/// service stores and the ratio is what the service adds (staging, events, counts). A timed
/// baseline first fills it with what `memberships` holds beside the measured segments
/// ([`OTHER_MEMBERS`]).
const SCRATCH: &str = "CREATE TABLE public.bench_hand_members (LIKE memberships INCLUDING ALL, \
    FOREIGN KEY (segment_id) REFERENCES segments ON DELETE CASCADE)";

/// Copies into the scratch table the memberships of every segment but those measured (`$1`),
/// untimed: the hand-written insert then meets indexes as full as the service's insert met
/// in `memberships`. Into an empty table the same insert took a third less (5.7–6.9 s vs
/// 8.5–10.0 s at 1M customers in psql, 2026-12-05), a saving the service's table never has.
const OTHER_MEMBERS: &str =
    "INSERT INTO public.bench_hand_members SELECT * FROM memberships WHERE segment_id <> ALL($1)";

/// Inserts the hand-written members of every `(segment, spec)` into the scratch table, over
/// everyone or the customers `scope`, as of `at`; returns the time the statements took.
async fn hand_members(
    tx: &mut PgConnection,
    segments: &[(Uuid, &RuleSpec)],
    scope: Option<&[String]>,
    at: DateTime<Utc>,
) -> anyhow::Result<Duration> {
    let mut took = Duration::ZERO;
    for (segment_id, spec) in segments {
        let members = match scope {
            None => spec.everyone_sql(),
            Some(_) => spec.scoped_sql(),
        };
        // This file's SQL and constants only; the values are bound.
        let sql = format!(
            "INSERT INTO public.bench_hand_members \
               (segment_id, customer_id, segment_version, enter_time, enter_reason) \
             SELECT $3::uuid, h.customer_id, 1, $1, 'recompute' FROM ({members}) h"
        );
        let started = Instant::now();
        sqlx::query(AssertSqlSafe(sql))
            .bind(at)
            .bind(scope.map(<[String]>::to_vec))
            .bind(*segment_id)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("The hand-written SQL of {} failed", spec.name))?;
        took += started.elapsed();
    }
    Ok(took)
}

/// Compares the scratch table with the memberships of `segment_ids` (of the customers `scope`
/// when given); fails naming a few differences.
async fn same_members(
    tx: &mut PgConnection,
    segment_ids: &[Uuid],
    scope: Option<&[String]>,
    what: &str,
) -> anyhow::Result<i64> {
    let differences: Vec<(String, String, bool, i64)> = sqlx::query_as(
        "WITH m AS (SELECT segment_id, customer_id FROM memberships \
           WHERE segment_id = ANY($1) AND ($2::text[] IS NULL OR customer_id = ANY($2))), \
         d AS (SELECT COALESCE(h.segment_id, m.segment_id) AS segment_id, \
                      COALESCE(h.customer_id, m.customer_id) AS customer_id, \
                      h.customer_id IS NULL AS only_memberships \
               FROM (SELECT * FROM public.bench_hand_members WHERE segment_id = ANY($1)) h \
                 FULL JOIN m \
                 ON m.segment_id = h.segment_id AND m.customer_id = h.customer_id \
               WHERE h.customer_id IS NULL OR m.customer_id IS NULL) \
         SELECT segment_id::text, customer_id, only_memberships, count(*) OVER () FROM d LIMIT 5",
    )
    .bind(segment_ids)
    .bind(scope.map(<[String]>::to_vec))
    .fetch_all(&mut *tx)
    .await
    .context("Failed to compare memberships with the hand-written SQL")?;
    if let Some((_, _, _, count)) = differences.first() {
        let examples: Vec<String> = differences
            .iter()
            .map(|(segment, customer, only_memberships, _)| {
                if *only_memberships {
                    format!("{customer} is a member of {segment}, the hand-written SQL says not")
                } else {
                    format!(
                        "{customer} is not a member of {segment}, the hand-written SQL says it is"
                    )
                }
            })
            .collect();
        anyhow::bail!(
            "{what}: memberships differ from the hand-written SQL in {count} places: {}",
            examples.join("; ")
        );
    }
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.bench_hand_members WHERE segment_id = ANY($1)",
    )
    .bind(segment_ids)
    .fetch_one(&mut *tx)
    .await?;
    Ok(total)
}

/// The hand-written baseline of a recompute over everyone on `db`: the RFM and lifecycle full
/// runs when `derived`, then every segment's members into the scratch table (which first
/// receives the other segments' memberships, untimed: [`OTHER_MEMBERS`]), in one
/// transaction rolled back (the data stays as the service left it; the table is vacuumed
/// after). The memberships must equal the members found. Returns the time the statements took
/// and the members found.
async fn hand_recompute(
    db: &BenchDatabase,
    segments: &[(Uuid, &RuleSpec)],
    derived: bool,
    what: &str,
) -> anyhow::Result<(Duration, i64)> {
    let mut connection = connect(db).await?;
    let at = Utc::now();
    let ids: Vec<Uuid> = segments.iter().map(|(id, _)| *id).collect();
    let mut tx = connection.begin().await?;
    sqlx::query(SCRATCH).execute(&mut *tx).await?;
    sqlx::query(OTHER_MEMBERS)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .context("Failed to copy the other segments' memberships")?;
    let mut took = Duration::ZERO;
    if derived {
        for sql in [
            rules::rfm_sql(&RfmConfig::default()),
            rules::lifecycle_sql(&LifecycleConfig::default()),
        ] {
            let started = Instant::now();
            sqlx::query(AssertSqlSafe(sql))
                .bind(at)
                .execute(&mut *tx)
                .await
                .context("The hand-written RFM or lifecycle run failed")?;
            took += started.elapsed();
        }
    }
    took += hand_members(&mut tx, segments, None, at).await?;
    let members = same_members(&mut tx, &ids, None, what).await?;
    tx.rollback().await?;
    if derived {
        sqlx::raw_sql("VACUUM (ANALYZE) customer_facts")
            .execute(&mut connection)
            .await?;
    }
    connection.close().await.ok();
    Ok((took, members))
}

/// Runs the selected rows of this group.
pub async fn run(harness: &Harness, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let wants = |name: &str| harness.selection.wants(name);
    if !harness.selection.wants_any(&row_names()) {
        return Ok(());
    }
    let scale = &harness.scale;
    let mut specs = rules::specs(scale.seg_segments);
    let event_recomputed = specs.len() + EVENT_RECOMPUTED;
    specs.extend(rules::event_specs());
    let anchor = Utc::now();
    let need_feed = [
        "segmentation.apply",
        "segmentation.apply_flat",
        "segmentation.freshness",
        "segmentation.apply_events",
    ]
    .into_iter()
    .any(wants);

    // The customers the feed events are about exist in profiles before the fixture is loaded
    // (they are among its first customers); creating them is part of profiles' ingest.
    let mut profiles = None;
    if need_feed {
        let db = BenchDatabase::create(&harness.admin_database_url, "seg_profiles").await?;
        let env = service_env(db.url(), harness.redis_url.as_deref());
        let serve = ["bench-serve".to_owned(), "profiles".to_owned()];
        let child = Child::start("seg-profiles", &serve, &env, &harness.log_dir).await?;
        let conns = Connections::open(child.addr(), scale.connections).await?;
        let (customers, create_time) =
            feed::create_customers(&conns, scale.feed_customers, scale.feed_concurrency).await?;
        profiles = Some(Profiles {
            db,
            child,
            conns,
            customers,
            create_time,
        });
    }
    let known_ids = profiles
        .as_ref()
        .map(|p| p.customers.clone())
        .unwrap_or_default();

    let mut large_fixture = Fixture::new(scale.seg_customers, scale.seg_activities, SEED, anchor);
    large_fixture.known_ids = known_ids.clone();
    let (large, child) = prepare(harness, "seg_large", &large_fixture, &specs).await?;
    let mut seg = client(child.addr()).await?;
    let segments: Vec<(Uuid, &RuleSpec)> = large
        .segment_ids
        .iter()
        .copied()
        .zip(specs.iter())
        .collect();
    let fixture_params = json!({
        "customers": large.loaded.customers,
        "activities": large.loaded.activities,
        "purchases": large.loaded.purchases,
        "custom_events": large.loaded.custom_events,
        "event_types": EVENT_TYPES.len(),
        "load_s": round(large.load_time.as_secs_f64()),
        "rule_segments": specs.len(),
        "event_rule_segments": rules::event_specs().len(),
        "fixture": "custops_segmentation::fixture, written into segmentation's tables in the shape the profiles feed writes",
    });

    // One rule segment recomputed against its hand-written SQL: a plain rule, then one over
    // custom events.
    for (name, index, custops, baseline) in [
        (
            "segmentation.recompute",
            RECOMPUTED,
            "RecomputeSegment, the job's own start to end time; every member enters (the segment was created before the customers were loaded)",
            "the hand-written INSERT ... SELECT of the same members into a table shaped like memberships (its columns, primary key, customer index and foreign key to segments) and holding the other segments' memberships (copied untimed), same data, same Postgres, rolled back",
        ),
        (
            "segmentation.recompute_events",
            event_recomputed,
            "RecomputeSegment of a rule over custom events (an EventCondition: COUNT in a last_days window with a where filter on a string property), the job's own start to end time; every member enters",
            "the hand-written INSERT ... SELECT of the same members (customer_events joined and grouped) into a table shaped like memberships and holding the other segments' memberships (copied untimed), same data, same Postgres, rolled back",
        ),
    ] {
        if !wants(name) {
            continue;
        }
        let done = recompute_segment(harness, &mut seg, &large, &segments, index).await?;
        let row = Row::new(name, "s", done.job.seconds, done.hand.as_secs_f64())
            .ratio_at_most(1.5)
            .params(with(
                &fixture_params,
                json!({
                    "segment": segments[index].1.name,
                    "members": done.members,
                    "entered": done.job.job.entered_count,
                    "custops": custops,
                    "waited_s": round(done.job.waited.as_secs_f64()),
                    "baseline": baseline,
                    "memberships_checked": "equal to the hand-written SQL's members",
                }),
            ));
        finished(rows, row);
    }

    // RecomputeAll always runs: the feed rows need RFM bounds stored and memberships current,
    // as a deployment that has run its first full recompute has them.
    let all = recompute_all(&mut seg, scale.job_timeout).await?;
    settle(&large.db, scale.job_timeout).await?;
    if wants("segmentation.recompute_all") {
        let (hand, members) =
            hand_recompute(&large.db, &segments, true, "segmentation.recompute_all").await?;
        let event_rule_members = members_by_name(
            &large.db,
            &segments[segments.len() - rules::event_specs().len()..],
        )
        .await?;
        let row = Row::new(
            "segmentation.recompute_all",
            "s",
            all.seconds,
            hand.as_secs_f64(),
        )
        .ratio_at_most(1.5)
        .params(with(
            &fixture_params,
            json!({
                "custops": "RecomputeAll, the job's own start to end time: RFM and lifecycle full runs, then every rule segment",
                "entered": all.job.entered_count,
                "exited": all.job.exited_count,
                "rfm_group_changed": all.job.rfm_group_changed_count,
                "lifecycle_changed": all.job.lifecycle_changed_count,
                "waited_s": round(all.waited.as_secs_f64()),
                "baseline": "hand-written SQL on the same data in one rolled-back transaction: an UPDATE scoring RFM (quintile bounds and scores in one statement), an UPDATE staging lifecycles, and each rule segment's INSERT ... SELECT into a table shaped like memberships (columns, primary key, customer index, foreign key)",
                "members": members,
                "event_rule_members": event_rule_members,
                "memberships_checked": "every rule segment's memberships equal the hand-written SQL's members",
            }),
        ));
        finished(rows, row);
    }
    if wants("segmentation.predict_fit") || wants("segmentation.predict_refresh") {
        predict_rows(harness, rows, &mut seg, &large, &fixture_params).await?;
    }
    drop(seg);
    child.stop().await?;

    let Some(profiles) = profiles else {
        return Ok(());
    };
    feed_rows(
        harness,
        rows,
        &specs,
        anchor,
        profiles,
        large,
        &fixture_params,
    )
    .await
}

/// `segmentation.predict_fit`: a PREDICTION job over the whole base (summaries, both
/// maximum-likelihood fits, everyone's predictions stored) against reading the purchase days it
/// summarises; `segmentation.predict_refresh`: refreshing a feed batch's predictions with the
/// stored model, per customer, against refreshing the same batch's RFM scores (which every
/// batch does anyway). Informational: the issue asks for the figures, not a bound.
async fn predict_rows(
    harness: &Harness,
    rows: &mut Vec<Row>,
    seg: &mut SegmentationServiceClient<Channel>,
    large: &Prepared,
    fixture_params: &Value,
) -> anyhow::Result<()> {
    use custops_segmentation::store::{self as seg_store, Who};
    use custops_segmentation::workflow::membership::Causes;

    // The fit's minimums lowered so the quick scale's few hundred customers fit too; the
    // config change itself queues the PREDICTION job that is timed.
    let requested = Instant::now();
    let changed = seg
        .update_prediction_config(pb::UpdatePredictionConfigRequest {
            prediction_config: Some(pb::PredictionConfig {
                min_customers: 10,
                min_repeat_customers: 10,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "min_customers".to_owned(),
                    "min_repeat_customers".to_owned(),
                ],
            }),
        })
        .await
        .context("UpdatePredictionConfig failed")?
        .into_inner();
    let fit = wait_job(
        seg,
        &changed.recompute_job_id,
        requested,
        harness.scale.job_timeout,
    )
    .await?;
    let model = seg
        .get_prediction_model(pb::GetPredictionModelRequest { version: 0 })
        .await
        .context("GetPredictionModel failed")?
        .into_inner()
        .model
        .context("no model")?;
    let mut connection = connect(&large.db).await?;
    let rfm = seg_store::rfm::load(&mut connection).await?;
    let now = Utc::now();
    let started = Instant::now();
    let days =
        seg_store::predictions::purchase_days(&mut connection, now, &rfm.config, Who::Everyone)
            .await?;
    let read = started.elapsed().as_secs_f64();
    if harness.selection.wants("segmentation.predict_fit") {
        let bg = model.bg_nbd.unwrap_or_default();
        let gg = model.gamma_gamma.unwrap_or_default();
        let row = Row::new("segmentation.predict_fit", "s", fit.seconds, read).params(with(
            fixture_params,
            json!({
                "custops": "a PREDICTION job (UpdatePredictionConfig queues it), the job's own start to end time: every customer's purchase days read, summarised, BG/NBD and Gamma-Gamma fitted by maximum likelihood, everyone's predictions stored in one transaction",
                "baseline": "reading the same purchase days (store::predictions::purchase_days, the job's one query) from the bench process",
                "customers": model.customer_count,
                "repeat_customers": model.repeat_customer_count,
                "bg_nbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "converged": bg.converged, "iterations": bg.iterations},
                "gamma_gamma": {"p": gg.p, "q": gg.q, "gamma": gg.gamma, "converged": gg.converged},
                "purchase_day_rows": days.iter().map(|d| d.days.len()).sum::<usize>(),
            }),
        ));
        finished(rows, row);
    }
    if harness.selection.wants("segmentation.predict_refresh") {
        // A feed batch's worth of customers who have predictions, the same every run.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_predictions ORDER BY customer_id LIMIT 1000",
        )
        .fetch_all(&mut connection)
        .await?;
        anyhow::ensure!(!ids.is_empty(), "the fit stored no predictions");
        let causes = Causes::new(pb::ChangeReason::Event, now);
        let mut tx = connection.begin().await?;
        let started = Instant::now();
        custops_segmentation::workflow::predictions::refresh_customers(&mut tx, &ids, &causes)
            .await?;
        let refresh = started.elapsed().as_secs_f64();
        tx.rollback().await?;
        let mut tx = connection.begin().await?;
        let started = Instant::now();
        seg_store::rfm::score(
            &mut tx,
            &rfm.config,
            rfm.thresholds().as_ref(),
            now,
            Who::Customers(&ids),
        )
        .await?;
        let rfm_refresh = started.elapsed().as_secs_f64();
        tx.rollback().await?;
        let per_customer = |seconds: f64| seconds * 1e6 / ids.len() as f64;
        let row = Row::new(
            "segmentation.predict_refresh",
            "µs/customer",
            per_customer(refresh),
            per_customer(rfm_refresh),
        )
        .params(with(
            fixture_params,
            json!({
                "custops": "workflow::predictions::refresh_customers for one feed batch of customers with predictions (their purchase days read, summaries, P(alive), expected purchases, value and CLV from the stored model, upserted, churn-flag events), in a rolled-back transaction",
                "baseline": "store::rfm::score of the same customers (the per-batch RFM refresh every batch runs anyway), rolled back",
                "batch": ids.len(),
            }),
        ));
        finished(rows, row);
    }
    connection.close().await.ok();
    Ok(())
}

/// Profiles, with the customers the feed rows are about.
struct Profiles {
    db: BenchDatabase,
    child: Child,
    conns: Arc<Connections>,
    customers: Vec<String>,
    create_time: Duration,
}

/// How a segmentation child caught up with profiles' feed.
#[derive(Debug, Clone)]
struct CatchUp {
    /// Events per second.
    rate: f64,
    /// Events applied in the time measured.
    events: i64,
    seconds: f64,
    /// Where its cursor got.
    reached: i64,
    caught_up: bool,
    method: &'static str,
}

impl CatchUp {
    fn describe(&self) -> Value {
        json!({
            "events_per_s": round(self.rate),
            "events_timed": self.events,
            "seconds": round(self.seconds),
            "cursor": self.reached,
            "caught_up": self.caught_up,
            "timed": self.method,
        })
    }
}

/// Segmentation's cursor on profiles' feed (0 before its first batch).
async fn cursor(connection: &mut PgConnection) -> anyhow::Result<i64> {
    let cursor: Option<i64> =
        sqlx::query_scalar("SELECT last_sequence FROM feed_cursors WHERE feed = 'profiles'")
            .fetch_optional(connection)
            .await
            .context("Failed to read segmentation's feed cursor")?;
    Ok(cursor.unwrap_or(0))
}

/// Starts a segmentation child on `db` following profiles and times how it reaches `target`
/// (polling its cursor every 10 ms from before the process starts), giving up after
/// `timeout`. The rate is taken from the first batch applied to the last, over the events
/// after the first batch; when that batch held most of the events, over all of them from the
/// process start.
async fn follow(
    harness: &Harness,
    db: &BenchDatabase,
    name: &str,
    profiles: SocketAddr,
    target: i64,
    timeout: Duration,
) -> anyhow::Result<(Child, CatchUp)> {
    let mut connection = connect(db).await?;
    let from = cursor(&mut connection).await?;
    let spawned = Instant::now();
    let poller = tokio::spawn(async move {
        let mut first: Option<(Instant, i64)> = None;
        let mut last = (spawned, from);
        while spawned.elapsed() < timeout {
            let now = cursor(&mut connection).await?;
            if now > last.1 {
                last = (Instant::now(), now);
                first.get_or_insert(last);
            }
            if now >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        connection.close().await.ok();
        anyhow::Ok((first, last))
    });
    let child = start_segmentation(harness, db, name, Some(profiles)).await?;
    let (first, (last_at, reached)) = poller.await.context("the cursor poller panicked")??;
    let caught_up = reached >= target;
    let total = reached - from;
    let catch_up = match first {
        Some((first_at, first_cursor))
            if reached - first_cursor >= total / 2 && last_at > first_at =>
        {
            CatchUp {
                rate: (reached - first_cursor) as f64 / (last_at - first_at).as_secs_f64(),
                events: reached - first_cursor,
                seconds: (last_at - first_at).as_secs_f64(),
                reached,
                caught_up,
                method: "from the first batch applied to the last, over the events after the first batch",
            }
        }
        _ => {
            let seconds = (last_at - spawned).as_secs_f64().max(1e-3);
            CatchUp {
                rate: total as f64 / seconds,
                events: total,
                seconds,
                reached,
                caught_up,
                method: "from the process start (its start-up included) to the last batch",
            }
        }
    };
    eprintln!(
        "bench: {name}: applied {} of {} events at {:.0} events/s{}",
        reached - from,
        target - from,
        catch_up.rate,
        if caught_up { "" } else { " (did not catch up)" }
    );
    Ok((child, catch_up))
}

/// The feed rows: apply, apply_flat, freshness, and the checks of what the feed applied.
async fn feed_rows(
    harness: &Harness,
    rows: &mut Vec<Row>,
    specs: &[RuleSpec],
    anchor: DateTime<Utc>,
    profiles: Profiles,
    large: Prepared,
    fixture_params: &Value,
) -> anyhow::Result<()> {
    let wants = |name: &str| harness.selection.wants(name);
    let scale = &harness.scale;
    let probe_count = scale.probes_idle + scale.probes_loaded;
    anyhow::ensure!(
        profiles.customers.len() > probe_count,
        "the feed needs more customers than its {probe_count} probes"
    );
    let (probes, others) = profiles.customers.split_at(probe_count);
    let others = Arc::new(others.to_vec());

    // The small customer base apply_flat compares with: the same customers of profiles, the
    // same rules, the same share of activities, ready the same way.
    let small = if wants("segmentation.apply_flat") {
        let customers = scale.seg_small_customers;
        let activities = scale.seg_activities * customers / scale.seg_customers.max(1);
        let mut fixture = Fixture::new(customers, activities, SEED, anchor);
        fixture.known_ids = profiles.customers.clone();
        let (small, child) = prepare(harness, "seg_small", &fixture, specs).await?;
        recompute_all(&mut client(child.addr()).await?, scale.job_timeout).await?;
        // As the large base is after its RecomputeAll: sequenced, vacuumed.
        settle(&small.db, scale.job_timeout).await?;
        child.stop().await?;
        Some(small)
    } else {
        None
    };

    let record_time = feed::record_activities(
        &profiles.conns,
        &others,
        scale.feed_activities,
        scale.feed_concurrency,
    )
    .await?;
    let target = feed::settled_position(profiles.db.url()).await?;
    let ingest_seconds = (profiles.create_time + record_time).as_secs_f64();
    let ingest_rate = target as f64 / ingest_seconds;
    eprintln!(
        "bench: profiles ingested {target} events in {ingest_seconds:.1} s ({ingest_rate:.0} events/s)"
    );
    let profiles_addr = profiles.child.addr();
    let feed_params = json!({
        "events": target,
        "profiles": format!(
            "{} CreateCustomer (CustomerCreated and one ConsentChanged each) then {} RecordActivity (7 in 10 purchases) over them, {} in flight, closed loop",
            profiles.customers.len(), scale.feed_activities, scale.feed_concurrency
        ),
        "profiles_events_per_s": round(ingest_rate),
        "profiles_s": round(ingest_seconds),
        "segmentation": "a child started after the events were recorded, following profiles' feed from its beginning; its cursor polled every 10 ms",
    });

    let small_catch_up = match &small {
        Some(small) => {
            let (child, catch_up) = follow(
                harness,
                &small.db,
                "seg-small-feed",
                profiles_addr,
                target,
                scale.apply_timeout,
            )
            .await?;
            child.stop().await?;
            Some(catch_up)
        }
        None => None,
    };
    let (child, large_catch_up) = follow(
        harness,
        &large.db,
        "seg-large-feed",
        profiles_addr,
        target,
        scale.apply_timeout,
    )
    .await?;

    if wants("segmentation.apply") {
        let row = Row::new(
            "segmentation.apply",
            "events/s",
            large_catch_up.rate,
            ingest_rate,
        )
        .ratio_at_least(0.5)
        .params(with(
            &with(fixture_params, feed_params.clone()),
            json!({
                "apply": large_catch_up.describe(),
                "baseline": "profiles' own ingest rate of the same events: all of them over the time the calls that wrote them took",
            }),
        ));
        finished(rows, row);
    }
    if let (Some(small), Some(small_catch_up)) = (&small, &small_catch_up) {
        let row = Row::new(
            "segmentation.apply_flat",
            "events/s",
            large_catch_up.rate,
            small_catch_up.rate,
        )
        .ratio_at_least(0.8)
        .params(with(
            &feed_params,
            json!({
                "custops": format!("the apply rate with {} customers and {} activities", large.loaded.customers, large.loaded.activities),
                "apply": large_catch_up.describe(),
                "baseline": format!("the apply rate of the same events with {} customers and {} activities (the same customers of profiles among them, the same rules)", small.loaded.customers, small.loaded.activities),
                "baseline_apply": small_catch_up.describe(),
                "rule_segments": specs.len(),
            }),
        ));
        finished(rows, row);
    }

    let seg_conns = Connections::open(child.addr(), scale.connections).await?;
    if wants("segmentation.freshness") {
        let row = freshness(
            harness,
            &profiles,
            &large.db,
            &seg_conns,
            large.segment_ids[0],
            probes,
            &others,
            large_catch_up.rate,
        )
        .await?;
        finished(rows, row.params_with(fixture_params));
    }
    drop(seg_conns);

    // Everything recorded reaches segmentation (or as far as it gets), then the data is checked
    // with the child stopped.
    let final_target = feed::settled_position(profiles.db.url()).await?;
    let mut connection = connect(&large.db).await?;
    let deadline = Instant::now() + scale.apply_timeout;
    let mut reached = cursor(&mut connection).await?;
    while reached < final_target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reached = cursor(&mut connection).await?;
    }
    child.stop().await?;
    let reached = cursor(&mut connection).await?;
    if reached < final_target {
        eprintln!(
            "bench: WARNING: segmentation applied profiles' feed up to {reached} of {final_target} within {:?}; checking what it applied",
            scale.apply_timeout
        );
    }
    let recorded = feed::recorded_activities(profiles.db.url(), reached).await?;
    let (held, total): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customer_activities WHERE activity_id = ANY($1)), \
                (SELECT count(*) FROM customer_activities)",
    )
    .bind(&recorded)
    .fetch_one(&mut connection)
    .await?;
    let expected_total = i64::try_from(large.loaded.activities)? + i64::try_from(recorded.len())?;
    anyhow::ensure!(
        held == i64::try_from(recorded.len())? && total == expected_total,
        "of the {} activities profiles recorded up to sequence {reached}, segmentation holds {held}; \
         it holds {total} activities in all where the fixture's {} and those make {expected_total}",
        recorded.len(),
        large.loaded.activities
    );
    same_scoped_members(
        &mut connection,
        &large.segment_ids,
        specs,
        &profiles.customers,
        "after the feed, the customers it touched",
    )
    .await?;
    connection.close().await.ok();
    eprintln!(
        "bench: segmentation feed checked: {} recorded activities each held once, memberships of {} customers equal to the hand-written SQL in {} segments",
        recorded.len(),
        profiles.customers.len(),
        specs.len()
    );
    if wants("segmentation.apply_events") {
        let row = apply_events(harness, &profiles, &large, specs, fixture_params).await?;
        finished(rows, row);
    }
    drop(profiles.conns);
    profiles.child.stop().await?;
    Ok(())
}

/// Checks that the memberships of `customers` in the segments `segment_ids` (of `specs`, in
/// order) equal the hand-written SQL's members of them, now; fails naming a few differences.
async fn same_scoped_members(
    connection: &mut PgConnection,
    segment_ids: &[Uuid],
    specs: &[RuleSpec],
    customers: &[String],
    what: &str,
) -> anyhow::Result<()> {
    let segments: Vec<(Uuid, &RuleSpec)> = segment_ids.iter().copied().zip(specs.iter()).collect();
    let mut tx = connection.begin().await?;
    sqlx::query(SCRATCH).execute(&mut *tx).await?;
    hand_members(&mut tx, &segments, Some(customers), Utc::now()).await?;
    same_members(&mut tx, segment_ids, Some(customers), what).await?;
    tx.rollback().await?;
    Ok(())
}

/// `segmentation.apply_events`: the fixture's twenty event types declared in profiles
/// (CreateEventType, one after the other) and `feed_custom_events` custom events of them
/// recorded for the feed's customers (RecordActivity, closed loop: both timed, profiles'
/// ingest), then a segmentation child on the large base following the feed from where the
/// last one stopped until it reaches profiles' last sequence. Checked afterwards with the child
/// stopped: every custom event profiles recorded (up to where segmentation got) is in
/// `customer_events` exactly once beside the fixture's, and the memberships of the customers
/// they are about equal the hand-written SQL's in every segment.
async fn apply_events(
    harness: &Harness,
    profiles: &Profiles,
    large: &Prepared,
    specs: &[RuleSpec],
    fixture_params: &Value,
) -> anyhow::Result<Row> {
    let scale = &harness.scale;
    let from = feed::settled_position(profiles.db.url()).await?;
    let types_time = feed::create_event_types(&profiles.conns).await?;
    let customers = Arc::new(profiles.customers.clone());
    let record_time = feed::record_custom_events(
        &profiles.conns,
        &customers,
        scale.feed_custom_events,
        scale.feed_concurrency,
    )
    .await?;
    let target = feed::settled_position(profiles.db.url()).await?;
    let ingest_seconds = (types_time + record_time).as_secs_f64();
    let ingest_rate = (target - from) as f64 / ingest_seconds;
    eprintln!(
        "bench: profiles ingested {} events ({} event types declared, {} custom events) in {ingest_seconds:.1} s ({ingest_rate:.0} events/s)",
        target - from,
        EVENT_TYPES.len(),
        scale.feed_custom_events
    );
    let (child, catch_up) = follow(
        harness,
        &large.db,
        "seg-events-feed",
        profiles.child.addr(),
        target,
        scale.apply_timeout,
    )
    .await?;
    child.stop().await?;

    let mut connection = connect(&large.db).await?;
    let reached = cursor(&mut connection).await?;
    if reached < target {
        eprintln!(
            "bench: WARNING: segmentation applied the custom events up to {reached} of {target} within {:?}; checking what it applied",
            scale.apply_timeout
        );
    }
    let recorded = feed::recorded_custom_events(profiles.db.url(), from, reached).await?;
    let ids: Vec<&str> = recorded.iter().map(|(id, _)| id.as_str()).collect();
    let (held, total): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customer_events WHERE activity_id = ANY($1)), \
                (SELECT count(*) FROM customer_events)",
    )
    .bind(&ids)
    .fetch_one(&mut connection)
    .await?;
    let expected_total =
        i64::try_from(large.loaded.custom_events)? + i64::try_from(recorded.len())?;
    anyhow::ensure!(
        held == i64::try_from(recorded.len())? && total == expected_total,
        "of the {} custom events profiles recorded after sequence {from} up to {reached}, segmentation holds {held}; \
         it holds {total} custom events in all where the fixture's {} and those make {expected_total}",
        recorded.len(),
        large.loaded.custom_events
    );
    let mut touched: Vec<String> = recorded.iter().map(|(_, c)| c.clone()).collect();
    touched.sort_unstable();
    touched.dedup();
    same_scoped_members(
        &mut connection,
        &large.segment_ids,
        specs,
        &touched,
        "after the custom events, the customers they are about",
    )
    .await?;
    connection.close().await.ok();
    eprintln!(
        "bench: segmentation custom events checked: {} recorded custom events each held once, memberships of {} customers equal to the hand-written SQL in {} segments",
        recorded.len(),
        touched.len(),
        specs.len()
    );
    Ok(Row::new(
        "segmentation.apply_events",
        "events/s",
        catch_up.rate,
        ingest_rate,
    )
    .ratio_at_least(0.5)
    .params(with(
        fixture_params,
        json!({
            "events": target - from,
            "profiles": format!(
                "{} CreateCustomer before (see segmentation.apply), then {} CreateEventType (the fixture's types) and {} RecordActivity with a custom_event of them over the same customers, {} in flight, closed loop",
                profiles.customers.len(), EVENT_TYPES.len(), scale.feed_custom_events, scale.feed_concurrency
            ),
            "profiles_events_per_s": round(ingest_rate),
            "profiles_s": round(ingest_seconds),
            "segmentation": "a child started after the events were recorded, following profiles' feed from where the previous one stopped; its cursor polled every 10 ms",
            "apply": catch_up.describe(),
            "baseline": "profiles' own ingest rate of the same events: all of them over the time the calls that wrote them took",
            "memberships_checked": "the customers the events are about, every rule segment, equal to the hand-written SQL's members",
        }),
    )))
}

/// `segmentation.freshness`: probes (a purchase in the probe category by a customer not yet in
/// the probe segment, then CheckMembership until true) first on an idle feed, one at a time,
/// then every `probe_every` while profiles imports other customers' activities in open loop at
/// half the apply rate measured. The background goes through ImportActivities (streams of
/// [`IMPORT_PER_CALL`]): what is measured is the feed at that rate, and profiles and the feed
/// share this machine's two cores, where RecordActivity one by one takes most of them before
/// segmentation applies anything (measured: 9.5 s p99 with the feed 3,655 events behind).
#[allow(
    clippy::too_many_arguments,
    reason = "the probe's parts, each named where it is called"
)]
async fn freshness(
    harness: &Harness,
    profiles: &Profiles,
    seg_db: &BenchDatabase,
    seg: &Arc<Connections>,
    probe_segment: Uuid,
    probes: &[String],
    others: &Arc<Vec<String>>,
    apply_rate: f64,
) -> anyhow::Result<FreshnessRow> {
    let scale = &harness.scale;
    let timeout = scale.probe_timeout;
    let (idle_probes, loaded_probes) = probes.split_at(scale.probes_idle);
    let seg_url: Arc<str> = Arc::from(seg_db.url());
    let mut idle = Probes::default();
    for customer in idle_probes {
        let target = Probe {
            segment: probe_segment,
            customer: customer.clone(),
            database_url: seg_url.clone(),
            timeout,
        };
        idle.add(probe(&profiles.conns, seg, &target).await?);
    }
    let rate = (apply_rate / 2.0).max(0.5);
    let window = Window {
        warmup: scale.warmup,
        measure: scale.probe_every * u32::try_from(loaded_probes.len()).unwrap_or(u32::MAX),
    };
    let import = feed::import_call(others.clone(), IMPORT_PER_CALL);
    let background = load::open_loop(
        &profiles.conns,
        rate / IMPORT_PER_CALL as f64,
        window,
        MAX_IN_FLIGHT,
        LatencyFrom::Schedule,
        &import,
    );
    let probing = async {
        tokio::time::sleep(window.warmup).await;
        let mut tasks = tokio::task::JoinSet::new();
        for customer in loaded_probes {
            let (profiles, seg) = (profiles.conns.clone(), seg.clone());
            let target = Probe {
                segment: probe_segment,
                customer: customer.clone(),
                database_url: seg_url.clone(),
                timeout,
            };
            tasks.spawn(async move { probe(&profiles, &seg, &target).await });
            tokio::time::sleep(scale.probe_every).await;
        }
        // How far segmentation is behind profiles' feed as the background load ends.
        let latest: Option<i64> = sqlx::query_scalar("SELECT max(sequence) FROM profiles.outbox")
            .fetch_one(&mut open(profiles.db.url(), None).await?)
            .await?;
        let lag = latest.unwrap_or(0) - cursor(&mut connect(seg_db).await?).await?;
        let mut loaded = Probes::default();
        while let Some(done) = tasks.join_next().await {
            loaded.add(done.context("a probe panicked")??);
        }
        anyhow::Ok((loaded, lag))
    };
    let (background, loaded) = tokio::join!(background, probing);
    let background = background?;
    let (mut loaded, lag) = loaded?;
    // Refusals of the background say the machine was saturated (profiles and the feed share
    // its two cores): reported in params, not fatal; any other failure is.
    anyhow::ensure!(
        background.error_count() == 0,
        "segmentation.freshness's background ImportActivities: {} calls failed: {}",
        background.error_count(),
        background.first_error.as_deref().unwrap_or_default()
    );
    let p99 = loaded.samples.quantile_ms(0.99).unwrap_or(f64::NAN);
    let idle_p99 = idle.samples.quantile_ms(0.99).unwrap_or(f64::NAN);
    let row = Row::new("segmentation.freshness", "ms (p99)", p99, idle_p99)
        .custops_below(1000.0)
        .latency(loaded.samples.quantile_ms(0.5), Some(p99));
    Ok(FreshnessRow {
        row,
        params: json!({
            "probe": format!("RecordActivity of a purchase in {PROBE_CATEGORY:?} by a customer not in the segment \"bought {PROBE_CATEGORY} in 7 days\", then CheckMembership until true (every 5 ms for 250 ms, every 20 ms to 2 s, then every 100 ms); latency from the RecordActivity send (a refused send is retried after a backoff, and the time starts at the send that was taken)"),
            "probes": loaded.samples.len(),
            "probes_timed_out": loaded.timed_out,
            "timed_out_but_member_in_postgres": loaded.member_in_postgres,
            "feed_lag_at_window_end": lag,
            "probe_timeout_s": timeout.as_secs_f64(),
            "probe_every_ms": scale.probe_every.as_millis(),
            "background": format!("ImportActivities of other customers' activities on profiles, streams of {IMPORT_PER_CALL}, open loop (events per second below)"),
            "background_rate_per_s": round(rate),
            "background_sent_per_s": round(background.sent_per_sec() * IMPORT_PER_CALL as f64),
            "background_refused_per_s": round(background.refused_per_sec() * IMPORT_PER_CALL as f64),
            "apply_rate_per_s": round(apply_rate),
            "baseline": "the same probes one at a time on an idle feed, p99",
            "baseline_probes": idle.samples.len(),
            "baseline_timed_out": idle.timed_out,
            "baseline_timed_out_but_member_in_postgres": idle.member_in_postgres,
            "baseline_p50_ms": idle.samples.quantile_ms(0.5),
        }),
    })
}

/// The freshness row and its own params, to which the fixture's are added.
struct FreshnessRow {
    row: Row,
    params: Value,
}

impl FreshnessRow {
    fn params_with(self, fixture: &Value) -> Row {
        self.row.params(with(fixture, self.params))
    }
}

/// Probe latencies, a timed-out probe counted at the timeout.
#[derive(Debug, Default)]
struct Probes {
    samples: Samples,
    timed_out: usize,
    /// Timed-out probes whose membership Postgres held at the timeout: applied, but not seen
    /// through CheckMembership.
    member_in_postgres: usize,
}

impl Probes {
    fn add(&mut self, seen: Seen) {
        match seen {
            Seen::After(latency) => self.samples.push(latency),
            Seen::Never {
                timeout,
                in_postgres,
            } => {
                self.samples.push(timeout);
                self.timed_out += 1;
                self.member_in_postgres += usize::from(in_postgres);
            }
        }
    }
}

/// What a probe asks about.
#[derive(Debug, Clone)]
struct Probe {
    segment: Uuid,
    customer: String,
    /// Segmentation's database, read when the probe times out.
    database_url: Arc<str>,
    timeout: Duration,
}

/// When a probe's membership showed.
#[derive(Debug, Clone, Copy)]
enum Seen {
    After(Duration),
    /// Not within the timeout; whether Postgres held the membership by then.
    Never {
        timeout: Duration,
        in_postgres: bool,
    },
}

/// One probe: checks the customer is not a member yet, records its purchase in the probe
/// category and asks CheckMembership until it answers true; the latency counts from the
/// RecordActivity send. A probe still false after its timeout says whether Postgres held the
/// membership by then.
async fn probe(
    profiles: &Arc<Connections>,
    seg: &Arc<Connections>,
    target: &Probe,
) -> anyhow::Result<Seen> {
    let check = || async {
        SegmentationServiceClient::new(seg.pick())
            .check_membership(pb::CheckMembershipRequest {
                segment_id: target.segment.to_string(),
                customer_id: target.customer.clone(),
            })
            .await
            .map(|answer| answer.into_inner().member)
            .context("CheckMembership failed")
    };
    anyhow::ensure!(
        !check().await?,
        "probe customer {} is in the probe segment before its purchase",
        target.customer
    );
    // A refusal (RESOURCE_EXHAUSTED while the background saturates profiles, UNAVAILABLE) is
    // retried after a backoff, as a client would; the probe's time starts at the send that
    // was taken.
    let mut attempt = 0;
    let sent = loop {
        let sent = Instant::now();
        match feed::purchase(profiles.pick(), &target.customer, PROBE_CATEGORY).await {
            Ok(()) => break sent,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                ) && attempt < 8 =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            Err(status) => {
                return Err(status).context("the probe's RecordActivity failed");
            }
        }
    };
    loop {
        if check().await? {
            return Ok(Seen::After(sent.elapsed()));
        }
        let waited = sent.elapsed();
        if waited >= target.timeout {
            let in_postgres: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM memberships WHERE segment_id = $1 AND customer_id = $2)",
            )
            .bind(target.segment)
            .bind(&target.customer)
            .fetch_one(&mut open(&target.database_url, Some("segmentation")).await?)
            .await?;
            return Ok(Seen::Never {
                timeout: target.timeout,
                in_postgres,
            });
        }
        let pause = if waited < Duration::from_millis(250) {
            5
        } else if waited < Duration::from_secs(2) {
            20
        } else {
            100
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// `base` with the fields of `more` added.
fn with(base: &Value, more: Value) -> Value {
    let mut merged = base.clone();
    if let (Some(merged), Value::Object(more)) = (merged.as_object_mut(), more) {
        merged.extend(more);
    }
    merged
}

/// Three decimals are plenty in params.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::super::Scale;
    use super::*;

    #[test]
    fn the_rows_are_the_benchmarks_of_the_group() {
        let names = row_names();
        assert_eq!(names.len(), 9);
        assert!(names.iter().all(|n| n.starts_with("segmentation.")));
        let scale = Scale::quick();
        assert!(scale.feed_customers > scale.probes_idle + scale.probes_loaded);
    }
}
