//! Following profiles: a merge re-links responses and tickets, an erasure removes ids and free
//! text but keeps the scores in the metrics. The feed is the real shared feed server over a
//! profiles schema in the same test database.

use std::str::FromStr;
use std::time::Duration;

use custops_common::auth::AuthSettings;
use custops_common::config::{ServerSettings, ServiceSettings};
use custops_common::feed::{EventFeedApi, FeedOptions};
use custops_common::outbox::{self, OutboxEvent};
use custops_common::server::Application;
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::profiles::v1::{CustomerErased, CustomerMerged};
use custops_feedback::domain::clock::ManualClock;
use custops_testkit::{TestDatabase, eventually};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    active_survey, full_survey, invite, rid, score, spawn_app_with, submit_request, t0,
};

async fn profiles_feed(
    db: &TestDatabase,
    stop: &CancellationToken,
) -> anyhow::Result<(PgPool, u16)> {
    let options = PgConnectOptions::from_str(db.url())?.options([("search_path", "profiles")]);
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect_with(options)
        .await?;
    custops_common::db::migrate(&pool, "profiles", &Migrator::with_migrations(Vec::new())).await?;
    let api = EventFeedApi::start(
        pool.clone(),
        ServiceKind::Profiles,
        FeedOptions {
            shutdown: stop.clone(),
            ..FeedOptions::default()
        },
    );
    let app = Application::bind(&ServerSettings::local(
        ServiceKind::Profiles,
        AuthSettings::Disabled,
    ))
    .await?
    .add_api(api.into_server());
    let port = app.port();
    tokio::spawn({
        let stop = stop.clone();
        async move { app.run_until_stopped(stop.cancelled_owned()).await }
    });
    Ok((pool, port))
}

async fn publish(pool: &PgPool, event: OutboxEvent) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    outbox::append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::test]
async fn merges_relink_and_erasures_keep_only_anonymous_scores() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let stop = CancellationToken::new();
    let (profiles, port) = profiles_feed(&db, &stop).await?;
    let mut settings = ServiceSettings::for_local(ServiceKind::Feedback, db.url());
    settings
        .clients
        .peers
        .insert(ServiceKind::Profiles, format!("http://127.0.0.1:{port}"));
    let mut app = spawn_app_with(db, settings, ManualClock::new(t0())).await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    let mut request = submit_request(&invitation_id, vec![score("nps", 2)]);
    request.answers.push(pb::Answer {
        question_id: "comment".to_owned(),
        value: Some(pb::answer::Value::Text(
            "my address is 1 Main St".to_owned(),
        )),
    });
    let r = app
        .client
        .submit_response(request)
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    let source = r.customer_id.clone();

    publish(
        &profiles,
        OutboxEvent::new(
            "customer",
            &source,
            &CustomerMerged {
                merge_id: rid(),
                source_customer_id: source.clone(),
                target_customer_id: "survivor".to_owned(),
                ..Default::default()
            },
        ),
    )
    .await?;
    let pool = app.pool.clone();
    let relinked = eventually(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM feedback.responses r JOIN feedback.tickets t \
                 ON t.source_response_id = r.response_id \
                 WHERE r.customer_id = 'survivor' AND t.customer_id = 'survivor'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 1
        }
    })
    .await;
    assert!(relinked, "the merge was not applied");

    publish(
        &profiles,
        OutboxEvent::new(
            "customer",
            "survivor",
            &CustomerErased {
                customer_id: "survivor".to_owned(),
                erase_time: None,
                merged_customer_ids: vec![source],
            },
        ),
    )
    .await?;
    let erased = eventually(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM feedback.responses WHERE customer_id = '' AND erase_time IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == 1
        }
    })
    .await;
    assert!(erased, "the erasure was not applied");
    let stored = app
        .client
        .get_response(pb::GetResponseRequest {
            response_id: r.response_id.clone(),
        })
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    let texts: Vec<String> = stored
        .answers
        .iter()
        .filter_map(|a| match &a.value {
            Some(pb::answer::Value::Text(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, [String::new()]);
    let ticket = app
        .client
        .get_ticket(pb::GetTicketRequest {
            ticket_id: r.follow_up_ticket_id,
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(
        (ticket.customer_id.as_str(), ticket.subject.as_str()),
        ("", "")
    );
    assert!(ticket.erase_time.is_some() && stored.erase_time.is_some());
    // The score still counts.
    let m = app
        .client
        .get_survey_metrics(pb::GetSurveyMetricsRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        m.total.and_then(|t| t.nps).and_then(|n| n.score),
        Some(-100.0)
    );
    stop.cancel();
    Ok(())
}
