//! Request ids (custops_common::idempotency): a replay answers the first call's reply byte for
//! byte, however the resource changed since; a request id is one call's, whatever the RPC;
//! racing calls with one key apply once; keys go after their retention; keys recorded before
//! the shared scheme refuse a retry instead of applying it again.

use std::str::FromStr;
use std::time::Duration;

use custops_common::config::ServiceSettings;
use custops_common::idempotency::{self, RETENTION};
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as pb;
use custops_feedback::domain::ManualClock;
use custops_testkit::TestDatabase;
use prost::Message;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tonic::Code;

use crate::helpers::{
    TestApp, full_survey, reason, rid, spawn_app, spawn_app_pruning_every, spawn_app_with, t0,
};

fn open_request(request_id: &str) -> pb::OpenTicketRequest {
    pb::OpenTicketRequest {
        customer_id: uuid::Uuid::now_v7().to_string(),
        category: "delivery".to_owned(),
        severity: pb::TicketSeverity::Medium.into(),
        channel: "phone".to_owned(),
        subject: "Parcel late".to_owned(),
        request_id: request_id.to_owned(),
        ..Default::default()
    }
}

fn create_survey_request(request_id: &str) -> pb::CreateSurveyRequest {
    pb::CreateSurveyRequest {
        survey: Some(full_survey()),
        request_id: request_id.to_owned(),
    }
}

async fn count(app: &TestApp, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(&app.pool).await?)
}

/// The request ids of the stored keys, in order.
async fn keys(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT request_id FROM feedback.idempotency_keys ORDER BY request_id")
            .fetch_all(pool)
            .await?,
    )
}

#[tokio::test]
async fn a_replay_after_the_resource_changed_answers_the_first_reply_byte_for_byte()
-> anyhow::Result<()> {
    // Arrange: a survey created, then activated; a ticket started, then resolved.
    let mut app = spawn_app().await?;
    let create = create_survey_request(&rid());
    let created = app.client.create_survey(create.clone()).await?.into_inner();
    let survey_id = created
        .survey
        .as_ref()
        .map(|s| s.survey_id.clone())
        .unwrap_or_default();
    app.clock.advance(chrono::Duration::minutes(1));
    app.client
        .activate_survey(pb::ActivateSurveyRequest {
            survey_id: survey_id.clone(),
            etag: String::new(),
        })
        .await?;
    let ticket = app
        .client
        .open_ticket(open_request(&rid()))
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    let start = pb::StartTicketRequest {
        ticket_id: ticket.ticket_id.clone(),
        request_id: rid(),
        ..Default::default()
    };
    let started = app.client.start_ticket(start.clone()).await?.into_inner();
    app.clock.advance(chrono::Duration::minutes(1));
    app.client
        .resolve_ticket(pb::ResolveTicketRequest {
            ticket_id: ticket.ticket_id.clone(),
            resolution: Some(pb::TicketResolution {
                code: pb::ResolutionCode::Fixed.into(),
                note: "re-sent".to_owned(),
                compensation: None,
            }),
            ..Default::default()
        })
        .await?;

    // Act
    let create_replay = app.client.create_survey(create).await?.into_inner();
    let start_replay = app.client.start_ticket(start).await?.into_inner();

    // Assert: the first replies, byte for byte, not the survey and ticket as they are now.
    assert_eq!(create_replay.encode_to_vec(), created.encode_to_vec());
    assert_eq!(start_replay.encode_to_vec(), started.encode_to_vec());
    let replayed_survey = create_replay.survey.unwrap_or_default();
    assert_eq!(replayed_survey.status(), pb::SurveyStatus::Draft);
    let survey_now = app
        .client
        .get_survey(pb::GetSurveyRequest { survey_id })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    assert_eq!(survey_now.status(), pb::SurveyStatus::Active);
    let replayed_ticket = start_replay.ticket.unwrap_or_default();
    assert_eq!(replayed_ticket.status(), pb::TicketStatus::InProgress);
    let ticket_now = app
        .client
        .get_ticket(pb::GetTicketRequest {
            ticket_id: ticket.ticket_id,
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(ticket_now.status(), pb::TicketStatus::Resolved);
    Ok(())
}

#[tokio::test]
async fn a_request_id_reused_on_another_rpc_is_refused() -> anyhow::Result<()> {
    // Arrange: a survey created under a request id.
    let mut app = spawn_app().await?;
    let request_id = rid();
    app.client
        .create_survey(create_survey_request(&request_id))
        .await?;

    // Act: the same request id on OpenTicket and on CreateReview.
    let ticket = app.client.open_ticket(open_request(&request_id)).await;
    let review = app
        .client
        .create_review(pb::CreateReviewRequest {
            review: Some(pb::Review {
                customer_id: uuid::Uuid::now_v7().to_string(),
                subject: Some(pb::ReviewSubject {
                    kind: pb::ReviewSubjectKind::Product.into(),
                    subject_id: "sku-1".to_owned(),
                }),
                rating: 4,
                ..Default::default()
            }),
            request_id: request_id.clone(),
        })
        .await;

    // Assert: both refused by name, and neither made anything.
    for refused in [ticket.err(), review.err()] {
        let status = refused.unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert_eq!(reason(&status), "REQUEST_ID_REUSED");
    }
    assert_eq!(
        count(&app, "SELECT count(*) FROM feedback.tickets").await?,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM feedback.reviews").await?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn racing_calls_with_one_request_id_open_one_ticket() -> anyhow::Result<()> {
    // Arrange
    let app = spawn_app().await?;
    let request = open_request(&rid());

    // Act: twelve calls at once (all spawned before any is awaited, so they race).
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (mut client, request) = (app.client.clone(), request.clone());
            tokio::spawn(async move { client.open_ticket(request).await })
        })
        .collect();
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await??.into_inner().encode_to_vec());
    }

    // Assert: one ticket, one TicketOpened, one key; every call answered the same reply.
    assert_eq!(
        count(&app, "SELECT count(*) FROM feedback.tickets").await?,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM feedback.outbox WHERE type = 'custops.feedback.v1.TicketOpened'"
        )
        .await?,
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM feedback.idempotency_keys").await?,
        1
    );
    assert!(replies.iter().all(|r| *r == replies[0]));
    Ok(())
}

#[tokio::test]
async fn keys_older_than_the_retention_are_pruned() -> anyhow::Result<()> {
    // Arrange: a key recorded at t0 and one a day before the first expires.
    let mut app = spawn_app_pruning_every(Duration::from_millis(50)).await?;
    let old = create_survey_request("kept-35-days");
    let first = app.client.create_survey(old.clone()).await?.into_inner();
    let retention = chrono::Duration::from_std(RETENTION)?;
    app.clock.advance(retention - chrono::Duration::days(1));
    app.client
        .create_survey(create_survey_request("younger"))
        .await?;
    assert_eq!(keys(&app.pool).await?, ["kept-35-days", "younger"]);

    // Act: the first key's retention passes.
    app.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::seconds(1));

    // Assert: the pruner deletes it, not the younger one; the request id is free again.
    let pruned = custops_testkit::eventually(Duration::from_secs(10), || async {
        matches!(keys(&app.pool).await, Ok(k) if k == ["younger"])
    })
    .await;
    assert!(pruned, "{:?}", keys(&app.pool).await?);
    let again = app.client.create_survey(old).await?.into_inner();
    assert_ne!(
        again.survey.map(|s| s.survey_id),
        first.survey.map(|s| s.survey_id)
    );
    Ok(())
}

#[tokio::test]
async fn a_retry_straddling_the_shared_scheme_is_refused_not_applied_again() -> anyhow::Result<()> {
    // Arrange: the schema before the shared idempotency table, with keys recorded by the old
    // code: one call, and a request id used on two RPCs (the old key had the RPC in it).
    let db = TestDatabase::create().await?;
    let options = PgConnectOptions::from_str(db.url())?.options([("search_path", "feedback")]);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    let before: Vec<_> = custops_feedback::MIGRATIONS
        .iter()
        .filter(|m| m.version < 20261205100100)
        .cloned()
        .collect();
    custops_common::db::migrate(&pool, "feedback", &Migrator::with_migrations(before)).await?;
    let retried = create_survey_request("before-upgrade");
    let twice = open_request("on-two-rpcs");
    for (operation, request_id, fingerprint) in [
        (
            "CreateSurvey",
            "before-upgrade",
            idempotency::fingerprint(&retried),
        ),
        (
            "OpenTicket",
            "on-two-rpcs",
            idempotency::fingerprint(&twice),
        ),
        (
            "CreateSurvey",
            "on-two-rpcs",
            idempotency::fingerprint(&retried),
        ),
    ] {
        sqlx::query(
            "INSERT INTO idempotency_keys \
             (caller, operation, request_id, fingerprint, resource_id, create_time) \
             VALUES ('anonymous', $1, $2, $3, $4, $5)",
        )
        .bind(operation)
        .bind(request_id)
        .bind(fingerprint)
        .bind(uuid::Uuid::now_v7())
        .bind(t0())
        .execute(&pool)
        .await?;
    }
    pool.close().await;

    // Act: the service migrates on start; the retries of both calls come in.
    let settings = ServiceSettings::for_local(ServiceKind::Feedback, db.url());
    let mut app = spawn_app_with(db, settings, ManualClock::new(t0())).await?;
    let survey = app.client.create_survey(retried).await;
    let ticket = app.client.open_ticket(twice).await;

    // Assert: refused, nothing made; one key per request id is left.
    for refused in [survey.err(), ticket.err()] {
        let status = refused.unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert_eq!(reason(&status), "REQUEST_ID_REUSED");
    }
    assert_eq!(
        count(&app, "SELECT count(*) FROM feedback.surveys").await?,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM feedback.tickets").await?,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM feedback.idempotency_keys").await?,
        2
    );
    // A new request id works as ever.
    app.client
        .create_survey(create_survey_request(&rid()))
        .await?;
    Ok(())
}
