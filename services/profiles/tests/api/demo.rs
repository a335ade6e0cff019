//! `custops demo`'s sample data loads through the API and a second run stores nothing new.

use crate::support::spawn_app;

#[tokio::test]
async fn sample_data_loads_once() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();

    let first = custops_profiles::demo::load(&mut client, 40).await?;
    let second = custops_profiles::demo::load(&mut client, 40).await?;

    assert_eq!(first.customers, 40);
    assert!(first.activities_accepted > 40, "{first:?}");
    assert_eq!(second.activities_accepted, 0);
    assert_eq!(second.activities_duplicate, first.activities_accepted);
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(customers, 40);
    let countries: i64 = sqlx::query_scalar("SELECT count(DISTINCT country_code) FROM customers")
        .fetch_one(&app.pool)
        .await?;
    assert!(countries >= 3);
    Ok(())
}
