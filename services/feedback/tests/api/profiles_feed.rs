//! Following profiles: a merge re-links a customer's rows to the survivor, an unmerge moves
//! exactly those back (once per merge id, whatever the redelivery), an erasure removes ids and
//! free text wherever the customer's rows are but keeps the scores in the metrics. The feed is
//! the real shared feed server over a profiles schema in the same test database; what the
//! customers hold is read through the API.

use std::str::FromStr;
use std::time::Duration;

use custops_common::auth::AuthSettings;
use custops_common::config::{ServerSettings, ServiceSettings};
use custops_common::feed::{EventFeedApi, FeedOptions};
use custops_common::outbox::{self, OutboxEvent};
use custops_common::server::Application;
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::profiles::v1::{CustomerErased, CustomerMerged, CustomerUnmerged};
use custops_feedback::domain::ManualClock;
use custops_testkit::{TestDatabase, eventually};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::customers::{Holdings, PRIVATE_TEXT, export, exported, holdings, seed, summary};
use crate::helpers::{
    TestApp, active_survey, full_survey, invite, rid, score, spawn_app_with, submit_request, t0,
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
    let survivor = uuid::Uuid::now_v7().to_string();

    publish(
        &profiles,
        OutboxEvent::new(
            "customer",
            &source,
            &CustomerMerged {
                merge_id: rid(),
                source_customer_id: source.clone(),
                target_customer_id: survivor.clone(),
                ..Default::default()
            },
        ),
    )
    .await?;
    let pool = app.pool.clone();
    let relinked = eventually(Duration::from_secs(15), || {
        let pool = pool.clone();
        let survivor = survivor.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM feedback.responses r JOIN feedback.tickets t \
                 ON t.source_response_id = r.response_id \
                 WHERE r.customer_id = $1 AND t.customer_id = $1",
            )
            .bind(&survivor)
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
            &survivor,
            &CustomerErased {
                customer_id: survivor.clone(),
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

/// Feedback following a profiles feed the test writes to.
struct Followed {
    app: TestApp,
    profiles: PgPool,
    survey_id: String,
    stop: CancellationToken,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn followed() -> anyhow::Result<Followed> {
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
    Ok(Followed {
        app,
        profiles,
        survey_id,
        stop,
    })
}

fn customer() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Followed {
    async fn seed(&mut self, customer_id: &str) -> anyhow::Result<Holdings> {
        let survey_id = self.survey_id.clone();
        seed(&mut self.app, &survey_id, customer_id).await
    }

    async fn holdings(&mut self, customer_id: &str) -> anyhow::Result<Holdings> {
        holdings(&mut self.app.client, customer_id).await
    }

    async fn merged(&self, merge_id: &str, source: &str, target: &str) -> anyhow::Result<()> {
        let event = CustomerMerged {
            merge_id: merge_id.to_owned(),
            source_customer_id: source.to_owned(),
            target_customer_id: target.to_owned(),
            ..Default::default()
        };
        publish(&self.profiles, OutboxEvent::new("customer", target, &event)).await
    }

    async fn unmerged(&self, merge_id: &str, source: &str, target: &str) -> anyhow::Result<()> {
        let event = CustomerUnmerged {
            merge_id: merge_id.to_owned(),
            source_customer_id: source.to_owned(),
            target_customer_id: target.to_owned(),
            ..Default::default()
        };
        publish(&self.profiles, OutboxEvent::new("customer", target, &event)).await
    }

    async fn erased(&self, customer_id: &str, merged: &[&str]) -> anyhow::Result<()> {
        let event = CustomerErased {
            customer_id: customer_id.to_owned(),
            erase_time: None,
            merged_customer_ids: merged.iter().map(|m| (*m).to_owned()).collect(),
        };
        publish(
            &self.profiles,
            OutboxEvent::new("customer", customer_id, &event),
        )
        .await
    }

    /// Waits until feedback has applied every event published so far (its cursor reached the
    /// end of the feed).
    async fn settled(&self) -> anyhow::Result<()> {
        let (profiles, feedback) = (self.profiles.clone(), self.app.pool.clone());
        let done = eventually(Duration::from_secs(20), || {
            let (profiles, feedback) = (profiles.clone(), feedback.clone());
            async move {
                let end: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE sequence IS NULL), COALESCE(max(sequence), 0) \
                     FROM outbox",
                )
                .fetch_optional(&profiles)
                .await
                .ok()
                .flatten();
                let cursor: Option<i64> = sqlx::query_scalar(
                    "SELECT last_sequence FROM feedback.feed_cursors WHERE feed = 'profiles'",
                )
                .fetch_optional(&feedback)
                .await
                .ok()
                .flatten();
                matches!((end, cursor), (Some((0, end)), Some(cursor)) if cursor >= end)
            }
        })
        .await;
        anyhow::ensure!(done, "feedback did not catch up with the profiles feed");
        Ok(())
    }
}

#[tokio::test]
async fn an_unmerge_gives_the_source_back_exactly_its_own_and_its_erasure_reaches_it()
-> anyhow::Result<()> {
    let mut f = followed().await?;
    let (s, t) = (customer(), customer());
    let s_own = f.seed(&s).await?;
    let t_own = f.seed(&t).await?;

    let merge_id = rid();
    f.merged(&merge_id, &s, &t).await?;
    f.settled().await?;
    assert_eq!(f.holdings(&s).await?, Holdings::default());
    assert_eq!(f.holdings(&t).await?, s_own.and(&t_own));
    assert_eq!(
        exported(&export(&mut f.app.client, &t).await?),
        s_own.and(&t_own)
    );
    // The survivor gets more while the merge stands: that stays with it.
    let t_later = f.seed(&t).await?;
    let t_all = t_own.and(&t_later);

    f.unmerged(&merge_id, &s, &t).await?;
    f.settled().await?;
    assert_eq!(f.holdings(&s).await?, s_own);
    assert_eq!(f.holdings(&t).await?, t_all);

    f.erased(&s, &[]).await?;
    f.settled().await?;
    // Nothing of S is readable under any id…
    assert_eq!(f.holdings(&s).await?, Holdings::default());
    assert_eq!(f.holdings(&t).await?, t_all);
    let s_summary = summary(&mut f.app.client, &s).await?;
    assert_eq!(
        (
            s_summary.response_count,
            s_summary.ticket_count,
            s_summary.review_count
        ),
        (0, 0, 0)
    );
    let t_summary = summary(&mut f.app.client, &t).await?;
    assert_eq!(
        (
            t_summary.response_count,
            t_summary.ticket_count,
            t_summary.open_follow_up_count,
            t_summary.review_count
        ),
        (2, 4, 2, 2)
    );
    let s_export = export(&mut f.app.client, &s).await?;
    assert_eq!(exported(&s_export), Holdings::default());
    assert!(s_export.ticket_history.is_empty());
    assert_eq!(exported(&export(&mut f.app.client, &t).await?), t_all);
    // …and S's rows themselves are anonymised, their free text gone.
    let response = f
        .app
        .client
        .get_response(pb::GetResponseRequest {
            response_id: s_own.responses[0].clone(),
        })
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    assert_eq!(response.customer_id, "");
    assert!(response.erase_time.is_some());
    assert!(
        response
            .answers
            .iter()
            .all(|a| { !matches!(&a.value, Some(pb::answer::Value::Text(t)) if !t.is_empty()) })
    );
    for ticket_id in &s_own.tickets {
        let got = f
            .app
            .client
            .get_ticket(pb::GetTicketRequest {
                ticket_id: ticket_id.clone(),
            })
            .await?
            .into_inner();
        let ticket = got.ticket.unwrap_or_default();
        assert_eq!(
            (ticket.customer_id.as_str(), ticket.subject.as_str()),
            ("", "")
        );
        assert!(got.history.iter().all(|h| h.note.is_empty()));
    }
    let review = f
        .app
        .client
        .get_review(pb::GetReviewRequest {
            review_id: s_own.reviews[0].clone(),
        })
        .await?
        .into_inner()
        .review
        .unwrap_or_default();
    assert_eq!(
        (review.customer_id.as_str(), review.text.as_str()),
        ("", "")
    );
    // T's own keep their text.
    let t_review = f
        .app
        .client
        .get_review(pb::GetReviewRequest {
            review_id: t_own.reviews[0].clone(),
        })
        .await?
        .into_inner()
        .review
        .unwrap_or_default();
    assert_eq!(
        (t_review.customer_id.as_str(), t_review.text.as_str()),
        (t.as_str(), PRIVATE_TEXT)
    );
    Ok(())
}

#[tokio::test]
async fn erasing_the_survivor_of_a_standing_merge_erases_both() -> anyhow::Result<()> {
    let mut f = followed().await?;
    let (s, t, bystander) = (customer(), customer(), customer());
    f.seed(&s).await?;
    f.seed(&t).await?;
    let others = f.seed(&bystander).await?;
    f.merged(&rid(), &s, &t).await?;
    f.erased(&t, &[s.as_str()]).await?;
    f.settled().await?;
    for id in [&s, &t] {
        assert_eq!(f.holdings(id).await?, Holdings::default());
        assert_eq!(
            exported(&export(&mut f.app.client, id).await?),
            Holdings::default()
        );
        let sm = summary(&mut f.app.client, id).await?;
        assert_eq!(
            (sm.response_count, sm.ticket_count, sm.review_count),
            (0, 0, 0)
        );
    }
    assert_eq!(f.holdings(&bystander).await?, others);
    // The scores still count: three detractors.
    let m = f
        .app
        .client
        .get_survey_metrics(pb::GetSurveyMetricsRequest::default())
        .await?
        .into_inner();
    assert_eq!(m.total.map(|t| t.response_count), Some(3));
    Ok(())
}

#[tokio::test]
async fn redelivered_merges_and_unmerges_apply_once() -> anyhow::Result<()> {
    let mut f = followed().await?;
    let (s, t) = (customer(), customer());
    let s_own = f.seed(&s).await?;
    let t_own = f.seed(&t).await?;
    let both = s_own.and(&t_own);
    let (m1, m2) = (rid(), rid());

    // A merge delivered twice, and an unmerge of a merge feedback never applied.
    f.merged(&m1, &s, &t).await?;
    f.merged(&m1, &s, &t).await?;
    f.unmerged(&rid(), &s, &t).await?;
    f.settled().await?;
    assert_eq!(f.holdings(&s).await?, Holdings::default());
    assert_eq!(f.holdings(&t).await?, both);

    // Undone; then the merge arrives once more, late: it stays undone.
    f.unmerged(&m1, &s, &t).await?;
    f.merged(&m1, &s, &t).await?;
    f.settled().await?;
    assert_eq!(f.holdings(&s).await?, s_own);
    assert_eq!(f.holdings(&t).await?, t_own);

    // Merged again under a new id; the first unmerge, redelivered, must not undo it.
    f.merged(&m2, &s, &t).await?;
    f.unmerged(&m1, &s, &t).await?;
    f.settled().await?;
    assert_eq!(f.holdings(&s).await?, Holdings::default());
    assert_eq!(f.holdings(&t).await?, both);

    f.unmerged(&m2, &s, &t).await?;
    f.unmerged(&m2, &s, &t).await?;
    f.settled().await?;
    assert_eq!(f.holdings(&s).await?, s_own);
    assert_eq!(f.holdings(&t).await?, t_own);
    Ok(())
}

/// The backfill of merges applied before they were recorded
/// (`migrations/20261125000003_legacy_merge_moves.sql`), run again over rows re-keyed the way
/// those merges did.
async fn legacy_merge(pool: &PgPool, source: &str, target: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    for table in ["invitations", "responses", "tickets", "reviews"] {
        let sql = format!("UPDATE feedback.{table} SET customer_id = $2 WHERE customer_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(source)
            .bind(target)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("SET LOCAL search_path TO feedback")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(include_str!(
        "../../migrations/20261125000003_legacy_merge_moves.sql"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::test]
async fn merges_applied_before_they_were_recorded_are_undone_and_erased_by_their_origin()
-> anyhow::Result<()> {
    let mut f = followed().await?;
    // Pair 1 was merged before the migration; its unmerge arrives now.
    let (s1, t1) = (customer(), customer());
    let s1_own = f.seed(&s1).await?;
    let t1_own = f.seed(&t1).await?;
    // Pair 2 was merged and unmerged before the migration (the unmerge ignored): S2's rows are
    // stuck on T2 until S2 is erased.
    let (s2, t2) = (customer(), customer());
    let s2_own = f.seed(&s2).await?;
    let t2_own = f.seed(&t2).await?;
    legacy_merge(&f.app.pool, &s1, &t1).await?;
    legacy_merge(&f.app.pool, &s2, &t2).await?;
    assert_eq!(f.holdings(&t1).await?, s1_own.and(&t1_own));

    f.unmerged(&rid(), &s1, &t1).await?;
    f.erased(&s2, &[]).await?;
    f.settled().await?;
    assert_eq!(f.holdings(&s1).await?, s1_own);
    assert_eq!(f.holdings(&t1).await?, t1_own);
    assert_eq!(f.holdings(&s2).await?, Holdings::default());
    assert_eq!(f.holdings(&t2).await?, t2_own);
    let stuck = f
        .app
        .client
        .get_response(pb::GetResponseRequest {
            response_id: s2_own.responses[0].clone(),
        })
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    assert_eq!(stuck.customer_id, "");
    Ok(())
}
