//! Programs: create (validated field by field), get, list with pages, update with etags.

use custops_contracts::custops::loyalty::v1 as pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{bad_fields, program, rid, spawn_app};

#[tokio::test]
async fn a_program_round_trips_and_updates_under_its_etag() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 365))
        .await?;
    let got = client
        .get_program(pb::GetProgramRequest {
            program_id: id.clone(),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default();
    assert_eq!(got.currency, "CNY");
    assert_eq!(got.time_zone, "UTC");
    assert_eq!(got.state, pb::ProgramState::Active as i32);
    assert_eq!(
        got.tiers.iter().map(|t| t.rank).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    let update = |etag: String| pb::UpdateProgramRequest {
        program: Some(pb::Program {
            program_id: id.clone(),
            display_name: "Acme Club".to_owned(),
            etag,
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["display_name".to_owned()],
        }),
    };
    let updated = client
        .update_program(update(got.etag.clone()))
        .await?
        .into_inner();
    assert_eq!(
        updated.program.map(|p| p.display_name).as_deref(),
        Some("Acme Club")
    );
    let stale = client
        .update_program(update(got.etag))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a stale etag was accepted"))?;
    assert_eq!(stale.code(), Code::Aborted);

    // Members hold the base tier, so a ladder without it is refused.
    app.enrol(&id).await?;
    let current = client
        .get_program(pb::GetProgramRequest {
            program_id: id.clone(),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default();
    let mut ladder = program(pb::ClawbackPolicy::WithinBalance, 0).tiers;
    ladder[0].tier_code = "basic".to_owned();
    let refused = client
        .update_program(pb::UpdateProgramRequest {
            program: Some(pb::Program {
                program_id: id.clone(),
                etag: current.etag,
                tiers: ladder,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["tiers".to_owned()],
            }),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a held tier was removed"))?;
    assert_eq!(crate::helpers::error_info(&refused).0, "TIER_IN_USE");
    Ok(())
}

#[tokio::test]
async fn a_bad_program_names_every_bad_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut bad = program(pb::ClawbackPolicy::Unspecified, 0);
    bad.currency = "RMB".to_owned();
    bad.display_name.clear();
    if let Some(rules) = bad.earning_rules.as_mut() {
        rules.base_rate = Some(pb::EarnRate {
            points: 0,
            per_amount_minor: 100,
        });
    }
    if let Some(tier) = bad.tiers.get_mut(2) {
        tier.threshold = Some(pb::QualifyingAmount {
            amount: Some(pb::qualifying_amount::Amount::QualifyingPoints(100)),
        });
    }
    let status = app
        .client
        .clone()
        .create_program(pb::CreateProgramRequest {
            request_id: rid(),
            program: Some(bad),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a bad program was created"))?;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&status),
        [
            "program.display_name",
            "program.currency",
            "program.tiers[2].threshold",
            "program.earning_rules.base_rate.points",
            "program.clawback_policy",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn programs_list_in_pages_oldest_first() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
                .await?,
        );
    }
    let mut client = app.client.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_programs(pb::ListProgramsRequest {
                page_size: 2,
                page_token: token,
                states: vec![],
            })
            .await?
            .into_inner();
        seen.extend(page.programs.into_iter().map(|p| p.program_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    let status = client
        .list_programs(pb::ListProgramsRequest {
            page_size: 2,
            page_token: "garbage".into(),
            states: vec![],
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a forged token was accepted"))?;
    assert_eq!(bad_fields(&status), ["page_token"]);
    Ok(())
}

#[tokio::test]
async fn members_list_by_program_in_pages() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let other = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.enrol(&program_id).await?);
    }
    app.enrol(&other).await?;
    let mut client = app.client.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_members(pb::ListMembersRequest {
                program_id: program_id.clone(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        seen.extend(page.members.into_iter().map(|m| m.member_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    Ok(())
}
