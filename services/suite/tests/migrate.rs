//! `custops migrate` builds each service's schema from its own migrations, and running it
//! again changes nothing.

use custops_common::config::DatabaseSettings;
use custops_common::service::ServiceKind;
use custops_suite::migrate;
use custops_testkit::TestDatabase;
use sqlx::{Connection, PgConnection};

async fn tables_by_schema(url: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut conn = PgConnection::connect(url).await?;
    let rows = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_schema IN ('profiles', 'segmentation', 'loyalty', 'feedback') \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await?;
    Ok(rows)
}

#[tokio::test]
async fn migrate_creates_every_schema_and_is_idempotent() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let targets: Vec<_> = ServiceKind::ALL
        .into_iter()
        .map(|service| (service, DatabaseSettings::new(service, db.url())))
        .collect();

    migrate::run(&targets).await?;
    let first = tables_by_schema(db.url()).await?;
    migrate::run(&targets).await?;
    let second = tables_by_schema(db.url()).await?;

    for service in ServiceKind::ALL {
        for table in ["_sqlx_migrations", "feed_cursors", "outbox"] {
            let present = first
                .iter()
                .any(|(s, t)| s == service.schema() && t == table);
            assert!(present, "{service}: table {table} missing in {first:?}");
        }
    }
    assert_eq!(first, second, "a second migrate changed the schemas");
    Ok(())
}

#[tokio::test]
async fn migrate_only_touches_the_named_services() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let loyalty = ServiceKind::Loyalty;
    migrate::run(&[(loyalty, DatabaseSettings::new(loyalty, db.url()))]).await?;

    let schemas: Vec<String> = tables_by_schema(db.url())
        .await?
        .into_iter()
        .map(|(schema, _)| schema)
        .collect();
    assert!(!schemas.is_empty());
    assert!(schemas.iter().all(|s| s == "loyalty"), "{schemas:?}");
    Ok(())
}
