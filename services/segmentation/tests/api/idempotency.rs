//! Request ids through the gRPC API (`custops_common::idempotency`): a replay answers the first
//! response byte for byte even after the resource changed, a request id is bound to one RPC and
//! one request, racing calls with one key apply once (one segment, one job), honest retries of
//! requests with labels replay, keys from before the shared scheme are refused, and keys are
//! pruned after the retention by the scheduler.

use std::collections::BTreeMap;

use chrono::Duration;
use custops_common::idempotency::RETENTION;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::jobs;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, country_is, reason, spawn_app};

fn create_request(name: &str, request_id: &str) -> pb::CreateSegmentRequest {
    pb::CreateSegmentRequest {
        segment: Some(pb::Segment {
            display_name: name.to_owned(),
            kind: pb::SegmentKind::Rule.into(),
            rule: Some(country_is("CN")),
            ..Default::default()
        }),
        request_id: request_id.to_owned(),
        ..Default::default()
    }
}

fn recompute(segment_id: &str, request_id: &str) -> pb::RecomputeSegmentRequest {
    pb::RecomputeSegmentRequest {
        segment_id: segment_id.to_owned(),
        request_id: request_id.to_owned(),
    }
}

/// The jobs of one segment, newest first.
async fn jobs_of(app: &TestApp, segment_id: &str) -> anyhow::Result<Vec<pb::RecomputeJob>> {
    Ok(app
        .client
        .clone()
        .list_recompute_jobs(pb::ListRecomputeJobsRequest {
            segment_id: segment_id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .jobs)
}

async fn count(app: &TestApp, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(&app.pool).await?)
}

/// Fails unless `result` is ALREADY_EXISTS with reason REQUEST_ID_REUSED.
fn assert_reused<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> anyhow::Result<()> {
    let status = match result {
        Err(status) => status,
        Ok(answer) => anyhow::bail!("a reused request id was accepted: {answer:?}"),
    };
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(reason(&status), "REQUEST_ID_REUSED", "{status:?}");
    Ok(())
}

#[tokio::test]
async fn a_replay_after_the_segment_changed_answers_the_first_response() -> anyhow::Result<()> {
    // Arrange: a keyed create, then a rename.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let first = client
        .create_segment(create_request("Chinese customers", "create-1"))
        .await?
        .into_inner();
    let segment = first.segment.clone().unwrap_or_default();
    client
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                segment_id: segment.segment_id.clone(),
                display_name: "Renamed".to_owned(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
            ..Default::default()
        })
        .await?;

    // Act
    let replay = client
        .create_segment(create_request("Chinese customers", "create-1"))
        .await?
        .into_inner();

    // Assert: the first response, byte for byte, though the segment now reads otherwise.
    assert_eq!(replay.encode_to_vec(), first.encode_to_vec());
    assert_eq!(
        app.get_segment(&segment.segment_id).await?.display_name,
        "Renamed"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM segments").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_replay_after_its_job_ran_answers_the_first_response_and_queues_nothing()
-> anyhow::Result<()> {
    // Arrange: a keyed recompute whose job then runs to its end.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let segment = app.rule_segment("China", country_is("CN")).await?;
    let first = client
        .recompute_segment(recompute(&segment.segment_id, "again-1"))
        .await?
        .into_inner();
    let job = first.job.clone().unwrap_or_default();
    assert_eq!(job.state, i32::from(pb::RecomputeJobState::Queued));
    let ran = app.wait_job(&job.recompute_job_id).await?;
    assert_eq!(ran.state, i32::from(pb::RecomputeJobState::Succeeded));

    // Act: no job is queued any more, so running the request again would queue one.
    let replay = client
        .recompute_segment(recompute(&segment.segment_id, "again-1"))
        .await?
        .into_inner();

    // Assert: the first response (the job as QUEUED), and still the create's and this job.
    assert_eq!(replay.encode_to_vec(), first.encode_to_vec());
    assert_eq!(jobs_of(&app, &segment.segment_id).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_request_id_used_on_another_rpc_or_request_is_request_id_reused() -> anyhow::Result<()> {
    // Arrange: "shared-1" queued everyone's recompute.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let segment = app.rule_segment("China", country_is("CN")).await?;
    client
        .recompute_all(pb::RecomputeAllRequest {
            request_id: "shared-1".to_owned(),
        })
        .await?;
    let other = app.rule_segment("Also China", country_is("CN")).await?;
    client
        .recompute_segment(recompute(&segment.segment_id, "seg-1"))
        .await?;
    let jobs_before = count(&app, "SELECT count(*) FROM recompute_jobs").await?;

    // Act
    let on_recompute_segment = client
        .recompute_segment(recompute(&segment.segment_id, "shared-1"))
        .await;
    let on_create = client
        .create_segment(create_request("New", "shared-1"))
        .await;
    let other_request = client
        .recompute_segment(recompute(&other.segment_id, "seg-1"))
        .await;

    // Assert: all refused by name, and none of them wrote anything.
    assert_reused(on_recompute_segment)?;
    assert_reused(on_create)?;
    assert_reused(other_request)?;
    assert_eq!(
        count(&app, "SELECT count(*) FROM recompute_jobs").await?,
        jobs_before
    );
    assert_eq!(count(&app, "SELECT count(*) FROM segments").await?, 2);
    Ok(())
}

#[tokio::test]
async fn racing_creates_with_one_key_make_one_segment_and_one_job() -> anyhow::Result<()> {
    // Arrange
    let app = spawn_app().await?;

    // Act: twelve calls at once (all spawned before any is awaited).
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .create_segment(create_request("Raced", "race-1"))
                    .await
                    .map(|r| r.into_inner().encode_to_vec())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await??);
    }

    // Assert: one segment, one job, one SegmentCreated, one key; every answer the same.
    assert_eq!(count(&app, "SELECT count(*) FROM segments").await?, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM recompute_jobs").await?, 1);
    assert_eq!(
        app.events("custops.segmentation.v1.SegmentCreated")
            .await?
            .len(),
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await?,
        1
    );
    let created = pb::CreateSegmentResponse::decode(answers[0].as_slice())?;
    let stored: Uuid = sqlx::query_scalar("SELECT segment_id FROM segments")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(
        created.segment.map(|s| s.segment_id),
        Some(stored.to_string())
    );
    assert!(answers.iter().all(|a| *a == answers[0]));
    Ok(())
}

#[tokio::test]
async fn racing_recomputes_with_one_key_queue_one_job() -> anyhow::Result<()> {
    // Arrange: a segment whose first job has run.
    let app = spawn_app().await?;
    let segment = app.rule_segment("China", country_is("CN")).await?;

    // Act: twelve calls at once (all spawned before any is awaited), while the worker polls.
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = app.client.clone();
            let request = recompute(&segment.segment_id, "race-2");
            tokio::spawn(async move {
                client
                    .recompute_segment(request)
                    .await
                    .map(|r| r.into_inner().encode_to_vec())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await??);
    }

    // Assert: the create's job and one requested job; every answer names it.
    let jobs = jobs_of(&app, &segment.segment_id).await?;
    let requested: Vec<_> = jobs
        .iter()
        .filter(|j| j.trigger == i32::from(pb::RecomputeTrigger::Requested))
        .collect();
    assert_eq!((jobs.len(), requested.len()), (2, 1), "{jobs:?}");
    let answered = pb::RecomputeSegmentResponse::decode(answers[0].as_slice())?;
    assert_eq!(
        answered.job.map(|j| j.recompute_job_id),
        Some(requested[0].recompute_job_id.clone())
    );
    assert!(answers.iter().all(|a| *a == answers[0]));
    Ok(())
}

#[tokio::test]
async fn a_retried_create_with_labels_replays() -> anyhow::Result<()> {
    // Arrange: labels are a map, which prost encodes in a different order per decoding.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut request = create_request("Labelled", "labels-1");
    if let Some(segment) = request.segment.as_mut() {
        segment.labels = (0..8)
            .map(|i| (format!("key{i}"), format!("value{i}")))
            .collect::<BTreeMap<_, _>>();
    }
    let first = client.create_segment(request.clone()).await?.into_inner();

    // Act
    let mut replays = Vec::new();
    for _ in 0..5 {
        replays.push(client.create_segment(request.clone()).await);
    }

    // Assert
    for replay in replays {
        assert_eq!(replay?.into_inner(), first);
    }
    assert_eq!(count(&app, "SELECT count(*) FROM segments").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_key_recorded_before_the_shared_scheme_is_refused_not_applied_again() -> anyhow::Result<()>
{
    // Arrange: a RecomputeSegment key as the service stored it before the shared scheme (the
    // SHA-256 of the segment id's bytes), under the caller the tests call as.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let segment = app.rule_segment("China", country_is("CN")).await?;
    client
        .recompute_all(pb::RecomputeAllRequest {
            request_id: "probe".to_owned(),
        })
        .await?;
    let caller: String =
        sqlx::query_scalar("SELECT caller FROM idempotency_keys WHERE request_id = 'probe'")
            .fetch_one(&app.pool)
            .await?;
    let segment_id = Uuid::parse_str(&segment.segment_id)?;
    let old_response = pb::RecomputeSegmentResponse::default().encode_to_vec();
    sqlx::query(
        "INSERT INTO idempotency_keys (caller, request_id, method, fingerprint, response, \
         create_time) VALUES ($1, 'before-upgrade', 'RecomputeSegment', $2, $3, $4)",
    )
    .bind(&caller)
    .bind(Sha256::digest(segment_id.as_bytes()).to_vec())
    .bind(old_response)
    .bind(app.clock_now())
    .execute(&app.pool)
    .await?;
    let jobs_before = jobs_of(&app, &segment.segment_id).await?.len();

    // Act: the retry of that call after the upgrade.
    let retried = client
        .recompute_segment(recompute(&segment.segment_id, "before-upgrade"))
        .await;

    // Assert
    assert_reused(retried)?;
    assert_eq!(jobs_of(&app, &segment.segment_id).await?.len(), jobs_before);
    Ok(())
}

#[tokio::test]
async fn keys_are_pruned_by_the_scheduler_after_the_retention() -> anyhow::Result<()> {
    // Arrange: a key recorded now.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let segment = app.rule_segment("China", country_is("CN")).await?;
    client
        .recompute_all(pb::RecomputeAllRequest {
            request_id: "old-1".to_owned(),
        })
        .await?;
    let state = app.state();
    let retention = Duration::from_std(RETENTION)?;

    // Act: ticks one day before and one day after the retention ends.
    app.clock.advance(retention - Duration::days(1));
    jobs::scheduler::schedule_once(&state).await?;
    let kept = count(&app, "SELECT count(*) FROM idempotency_keys").await?;
    let still_bound = client
        .recompute_segment(recompute(&segment.segment_id, "old-1"))
        .await;
    app.clock.advance(Duration::days(2));
    jobs::scheduler::schedule_once(&state).await?;
    let left = count(&app, "SELECT count(*) FROM idempotency_keys").await?;
    let reusable = client
        .recompute_segment(recompute(&segment.segment_id, "old-1"))
        .await;

    // Assert: kept within the retention (the id still bound to its call), gone after it (the
    // id free for another call).
    assert_eq!((kept, left), (1, 0));
    assert_reused(still_bound)?;
    assert!(reusable.is_ok(), "{reusable:?}");
    Ok(())
}
