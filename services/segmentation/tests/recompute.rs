//! A full recompute on 100,000 customers finishes and agrees with incremental membership:
//! a rule segment's first recompute builds its members inside Postgres; facts of some
//! customers then change and are applied incrementally; a full recompute afterwards changes
//! nothing, and the members equal the rule compiled to SQL.

#[path = "support/app.rs"]
mod support;

use std::time::Instant;

use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::rule::parse_rule;
use custops_segmentation::store::{catalog, compile, facts};
use support::{TestApp, all, integer, not, predicate, spawn_app, string, tagged};

const CUSTOMERS: i64 = 100_000;

/// `geo.country IN (CN, SG) AND purchase.count >= 1 AND NOT tags CONTAINS "churned"`.
fn rule() -> pb::Condition {
    all(vec![
        predicate(
            "geo.country",
            pb::Operator::In,
            vec![string("CN"), string("SG")],
        ),
        predicate(
            "purchase.count",
            pb::Operator::GreaterOrEqual,
            vec![integer(1)],
        ),
        not(tagged("churned")),
    ])
}

/// The members the rule compiled to SQL selects now.
async fn sql_members(app: &TestApp) -> anyhow::Result<Vec<String>> {
    let mut conn = app.pool.acquire().await?;
    let catalog = catalog::load_catalog(&mut conn).await?;
    let rule = parse_rule(&rule(), "rule", &catalog)
        .map_err(|v| anyhow::anyhow!("rule refused: {v:?}"))?;
    let ctx = facts::eval_context(&mut conn, app.clock_now()).await?;
    Ok(compile::matching_customers(&mut conn, &rule, &ctx).await?)
}

#[tokio::test]
#[allow(clippy::print_stdout, reason = "the timings are part of what this test reports")]
async fn full_recompute_on_100k_customers_agrees_with_incremental_membership() -> anyhow::Result<()>
{
    let app = spawn_app().await?;
    let started = Instant::now();
    // Countries cycle CN, SG, US; every 4th customer bought once; every 7th is tagged churned.
    sqlx::query(
        "INSERT INTO customer_facts (customer_id, country, tags) \
         SELECT 'c' || lpad(i::text, 6, '0'), (ARRAY['CN', 'SG', 'US'])[i % 3 + 1], \
                CASE WHEN i % 7 = 0 THEN ARRAY['churned'] ELSE ARRAY[]::text[] END \
         FROM generate_series(1, $1) AS i",
    )
    .bind(CUSTOMERS)
    .execute(&app.pool)
    .await?;
    sqlx::query(
        "INSERT INTO customer_activities (activity_id, customer_id, kind, occur_time, amount_minor, currency) \
         SELECT 'a' || i, 'c' || lpad(i::text, 6, '0'), 'purchase', $2 - interval '10 days', 1000, 'CNY' \
         FROM generate_series(1, $1) AS i WHERE i % 4 = 0",
    )
    .bind(CUSTOMERS)
    .bind(app.clock_now())
    .execute(&app.pool)
    .await?;
    sqlx::raw_sql("ANALYZE customer_facts; ANALYZE customer_activities")
        .execute(&app.pool)
        .await?;
    let loaded = started.elapsed();

    // The first recompute builds the membership.
    let started = Instant::now();
    let segment = app.rule_segment("Buyers in CN/SG", rule()).await?;
    let first_recompute = started.elapsed();
    let expected = sql_members(&app).await?;
    // i % 4 = 0 and i % 3 in {0, 1} and i % 7 != 0.
    let by_hand = (1..=CUSTOMERS)
        .filter(|i| i % 4 == 0 && i % 3 != 2 && i % 7 != 0)
        .count();
    assert_eq!(expected.len(), by_hand);
    assert_eq!(app.stored_members(&segment.segment_id).await?, expected);
    assert_eq!(segment.member_count, i64::try_from(by_hand)?);
    assert_eq!(
        app.events("custops.segmentation.v1.SegmentEntered")
            .await?
            .len(),
        by_hand
    );

    // Facts change for 300 customers, applied incrementally as feed events would be: 100
    // members move to the US, 100 non-members buy, 100 members get the churned tag.
    let started = Instant::now();
    let mut changed = Vec::new();
    for i in (4..).step_by(12).take(100) {
        // i % 12 = 4: i % 4 = 0, i % 3 = 1 (SG).
        let id = format!("c{i:06}");
        sqlx::query("UPDATE customer_facts SET country = 'US' WHERE customer_id = $1")
            .bind(&id)
            .execute(&app.pool)
            .await?;
        changed.push(id);
    }
    for i in (1..).step_by(3).take(100) {
        // i % 3 = 1 (SG); those not yet buyers now buy.
        let id = format!("c{i:06}");
        sqlx::query(
            "INSERT INTO customer_activities (activity_id, customer_id, kind, occur_time, amount_minor, currency) \
             VALUES ('new-' || $1, $1, 'purchase', $2, 500, 'CNY')",
        )
        .bind(&id)
        .bind(app.clock_now())
        .execute(&app.pool)
        .await?;
        changed.push(id);
    }
    for i in (12..).step_by(12).take(100) {
        let id = format!("c{i:06}");
        sqlx::query("UPDATE customer_facts SET tags = ARRAY['churned'] WHERE customer_id = $1")
            .bind(&id)
            .execute(&app.pool)
            .await?;
        changed.push(id);
    }
    for id in &changed {
        app.reevaluate(id).await?;
    }
    let incremental_time = started.elapsed();
    let incremental = app.stored_members(&segment.segment_id).await?;
    assert_ne!(incremental, expected, "the changes moved some customers");
    assert_eq!(incremental, sql_members(&app).await?);

    // A full recompute (RFM, lifecycle, every rule segment) finds nothing to change.
    let started = Instant::now();
    let job = app
        .client
        .clone()
        .recompute_all(pb::RecomputeAllRequest {
            request_id: "full-1".to_owned(),
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let job = app.wait_job(&job.recompute_job_id).await?;
    let full_recompute = started.elapsed();
    assert_eq!(
        job.state,
        i32::from(pb::RecomputeJobState::Succeeded),
        "{job:?}"
    );
    assert_eq!((job.entered_count, job.exited_count), (0, 0), "{job:?}");
    assert_eq!((job.segments_total, job.segments_done), (1, 1));
    assert_eq!(job.progress_percent, 100);
    assert_eq!(job.customers_evaluated, CUSTOMERS);
    let result = job.segment_results.first().cloned().unwrap_or_default();
    assert_eq!(result.member_count, i64::try_from(incremental.len())?);
    assert_eq!(app.stored_members(&segment.segment_id).await?, incremental);
    assert_eq!(
        app.get_segment(&segment.segment_id).await?.member_count,
        i64::try_from(incremental.len())?
    );
    println!(
        "100k customers: load {loaded:?}, first recompute {first_recompute:?}, \
         300 incremental re-evaluations {incremental_time:?}, full recompute {full_recompute:?} \
         (of which the segment {} ms)",
        result.duration_millis
    );
    Ok(())
}
