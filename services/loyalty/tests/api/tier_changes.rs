//! A tier change caused by qualifying activity names the ledger entry that caused it: in the
//! earn's response, in the tier history and in the TierChanged event.

use custops_contracts::custops::loyalty::v1 as pb;
use prost::Message;

use crate::helpers::{TestApp, by_id, program, purchase, rid, spawn_app};

/// The member's upgrades from ListTierChanges, oldest first: (to tier, cause, entry id).
async fn upgrades(app: &TestApp, member_id: &str) -> anyhow::Result<Vec<(String, i32, String)>> {
    let changes = app
        .client
        .clone()
        .list_tier_changes(pb::ListTierChangesRequest {
            member_id: member_id.to_owned(),
            directions: vec![pb::TierChangeDirection::Upgrade.into()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .tier_changes;
    Ok(changes
        .into_iter()
        .rev()
        .map(|c| (c.to_tier_code, c.cause, c.ledger_entry_id))
        .collect())
}

/// The tier changes carried by the member's TierChanged events, in outbox order.
async fn tier_changed_events(
    app: &TestApp,
    member_id: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE type = 'custops.loyalty.v1.TierChanged' \
         AND aggregateid = $1 ORDER BY occurred_at, id",
    )
    .bind(member_id)
    .fetch_all(&app.pool)
    .await?;
    payloads
        .iter()
        .map(|p| {
            let change = pb::TierChanged::decode(p.as_slice())?
                .tier_change
                .unwrap_or_default();
            Ok((change.to_tier_code, change.ledger_entry_id))
        })
        .collect()
}

#[tokio::test]
async fn an_upgrade_by_an_earn_names_the_earn_exactly_at_and_above_the_threshold()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    // Silver at 500 qualifying points, gold at 2,000; one point per yuan.
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let qualifying = pb::TierChangeCause::QualifyingActivity as i32;
    let mut client = app.client.clone();

    // Exactly at the threshold: 500 points make silver at once.
    let at = app.enrol(&program_id).await?;
    let earned = client
        .earn_points(purchase(&at, "o-1", 50_000))
        .await?
        .into_inner();
    let entry_id = earned.ledger_entry.unwrap_or_default().ledger_entry_id;
    let change = earned.tier_change.unwrap_or_default();
    assert_eq!(
        (
            change.to_tier_code.as_str(),
            change.cause,
            change.ledger_entry_id.as_str()
        ),
        ("silver", qualifying, entry_id.as_str())
    );
    assert_eq!(
        upgrades(&app, &at).await?,
        vec![("silver".to_owned(), qualifying, entry_id.clone())]
    );
    assert_eq!(
        tier_changed_events(&app, &at).await?,
        vec![("silver".to_owned(), entry_id)]
    );

    // Above a threshold, straight past silver to gold; then a qualifying adjustment that
    // crosses nothing changes nothing.
    let above = app.enrol(&program_id).await?;
    let earned = client
        .earn_points(purchase(&above, "o-2", 250_000))
        .await?
        .into_inner();
    let entry_id = earned.ledger_entry.unwrap_or_default().ledger_entry_id;
    assert_eq!(
        earned
            .tier_change
            .map(|c| (c.to_tier_code, c.ledger_entry_id)),
        Some(("gold".to_owned(), entry_id.clone()))
    );
    client
        .adjust_points(pb::AdjustPointsRequest {
            request_id: rid(),
            member: by_id(&above),
            qualifying_points: 10,
            reason: "Goodwill".to_owned(),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        upgrades(&app, &above).await?,
        vec![("gold".to_owned(), qualifying, entry_id.clone())]
    );
    assert_eq!(
        tier_changed_events(&app, &above).await?,
        vec![("gold".to_owned(), entry_id)]
    );

    // An adjustment of qualifying points that crosses a threshold names the ADJUST entry.
    let adjusted = app.enrol(&program_id).await?;
    let out = client
        .adjust_points(pb::AdjustPointsRequest {
            request_id: rid(),
            member: by_id(&adjusted),
            qualifying_points: 600,
            reason: "Status match".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let entry_id = out.ledger_entry.unwrap_or_default().ledger_entry_id;
    assert_eq!(
        upgrades(&app, &adjusted).await?,
        vec![("silver".to_owned(), qualifying, entry_id)]
    );
    Ok(())
}
