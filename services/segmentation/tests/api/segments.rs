//! Segments through the gRPC API: create/get/list/update/delete with versions and etags, rule
//! validation naming the place in the tree, segment references (missing, self, cycles,
//! referenced on delete), validate_only, request_id idempotency, static uploads and preview.

use custops_contracts::custops::segmentation::v1 as pb;
use prost::Message;
use std::time::Duration;

use crate::helpers::{
    all, country_is, eventually, fields, integer, member_of, not, predicate, reason, spawn_app,
    string, tagged,
};
use tonic::Code;
use tonic_types::StatusExt;

fn create_request(name: &str, rule: Option<pb::Condition>) -> pb::CreateSegmentRequest {
    pb::CreateSegmentRequest {
        segment: Some(pb::Segment {
            display_name: name.to_owned(),
            kind: if rule.is_some() {
                pb::SegmentKind::Rule
            } else {
                pb::SegmentKind::Static
            }
            .into(),
            rule,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn crud_versions_and_etags() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    app.put_customer("c1", "CN", &[]).await?;
    app.put_customer("c2", "SG", &[]).await?;

    let mut request = create_request("China", Some(country_is("CN")));
    if let Some(s) = request.segment.as_mut() {
        s.labels.insert("team".to_owned(), "crm".to_owned());
    }
    let created = client.create_segment(request).await?.into_inner();
    let segment = created.segment.clone().unwrap_or_default();
    assert_eq!(segment.version, 1);
    assert!(!created.recompute_job_id.is_empty());
    let job = app.wait_job(&created.recompute_job_id).await?;
    assert_eq!(job.state, i32::from(pb::RecomputeJobState::Succeeded));
    assert_eq!(job.entered_count, 1);

    let got = app.get_segment(&segment.segment_id).await?;
    assert_eq!(got.member_count, 1);
    assert_eq!(got.membership_version, 1);
    assert_eq!(got.rule, Some(country_is("CN")));
    assert_eq!(app.stored_members(&segment.segment_id).await?, vec!["c1"]);

    // Update the rule with a stale etag: ABORTED; with the current one: version 2 and a job.
    let update = |etag: String, rule: pb::Condition| pb::UpdateSegmentRequest {
        segment: Some(pb::Segment {
            segment_id: segment.segment_id.clone(),
            rule: Some(rule),
            etag,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["rule".to_owned()],
        }),
        validate_only: false,
    };
    let stale = client
        .update_segment(update("stale".to_owned(), country_is("SG")))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(Code::Aborted));
    let updated = client
        .update_segment(update(got.etag.clone(), country_is("SG")))
        .await?
        .into_inner();
    let v2 = updated.segment.unwrap_or_default();
    assert_eq!(v2.version, 2);
    assert_ne!(v2.etag, got.etag);
    app.wait_job(&updated.recompute_job_id).await?;
    assert_eq!(app.stored_members(&segment.segment_id).await?, vec!["c2"]);

    // The same rule again changes nothing: no new version, same etag, no job.
    let again = client
        .update_segment(update(v2.etag.clone(), country_is("SG")))
        .await?
        .into_inner();
    assert_eq!(again.recompute_job_id, "");
    let same = again.segment.unwrap_or_default();
    assert_eq!((same.version, same.etag.clone()), (2, v2.etag.clone()));

    // validate_only changes nothing.
    let mut dry = update(v2.etag.clone(), country_is("CN"));
    dry.validate_only = true;
    let dry = client.update_segment(dry).await?.into_inner();
    assert_eq!(dry.segment.map(|s| s.version), Some(3));
    assert_eq!(app.get_segment(&segment.segment_id).await?.version, 2);

    // kind is immutable.
    let mut kind = update(v2.etag.clone(), country_is("CN"));
    kind.update_mask = Some(prost_types::FieldMask {
        paths: vec!["kind".to_owned()],
    });
    let status = client.update_segment(kind).await.err();
    assert_eq!(
        status.as_ref().map(fields),
        Some(vec!["update_mask".to_owned()])
    );

    let versions = client
        .list_segment_versions(pb::ListSegmentVersionsRequest {
            segment_id: segment.segment_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(
        versions
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        vec![2]
    );
    let older = client
        .list_segment_versions(pb::ListSegmentVersionsRequest {
            segment_id: segment.segment_id.clone(),
            page_size: 1,
            page_token: versions.next_page_token,
        })
        .await?
        .into_inner();
    assert_eq!(
        older.versions.first().and_then(|v| v.rule.clone()),
        Some(country_is("CN"))
    );

    // List with label filter and kind filter.
    let static_segment = app.static_segment("Static").await?;
    let listed = client
        .list_segments(pb::ListSegmentsRequest {
            labels: [("team".to_owned(), "crm".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.segments.len(), 1);
    assert_eq!(listed.segments[0].rule, None, "BASIC view by default");
    let statics = client
        .list_segments(pb::ListSegmentsRequest {
            kind: pb::SegmentKind::Static.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        statics
            .segments
            .iter()
            .map(|s| s.segment_id.clone())
            .collect::<Vec<_>>(),
        vec![static_segment.segment_id.clone()]
    );
    let batch = client
        .batch_get_segments(pb::BatchGetSegmentsRequest {
            segment_ids: vec![
                static_segment.segment_id.clone(),
                "0190f6f5-0000-7000-8000-000000000000".to_owned(),
            ],
            view: 0,
        })
        .await?
        .into_inner();
    assert_eq!(batch.segments.len(), 1);
    assert_eq!(batch.missing_segment_ids.len(), 1);

    // Delete: memberships go at once, lookups say NOT_FOUND, a second delete is NOT_FOUND.
    client
        .delete_segment(pb::DeleteSegmentRequest {
            segment_id: segment.segment_id.clone(),
            etag: String::new(),
        })
        .await?;
    assert!(app.stored_members(&segment.segment_id).await?.is_empty());
    assert!(app.segments_of("c2").await?.is_empty());
    let gone = app
        .is_member(&segment.segment_id, "c2")
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(gone, Some(Code::NotFound));
    let again = client
        .delete_segment(pb::DeleteSegmentRequest {
            segment_id: segment.segment_id.clone(),
            etag: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(again, Some(Code::NotFound));
    assert_eq!(
        app.events("custops.segmentation.v1.SegmentDeleted")
            .await?
            .len(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn rules_are_refused_naming_the_place_in_the_tree() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let refused = |rule: pb::Condition| {
        let mut client = client.clone();
        async move {
            client
                .create_segment(create_request("Bad", Some(rule)))
                .await
                .err()
                .map(|s| fields(&s))
                .unwrap_or_default()
        }
    };
    // Malformed: an empty node inside a group.
    let malformed = all(vec![country_is("CN"), pb::Condition { kind: None }]);
    assert_eq!(
        refused(malformed).await,
        vec!["segment.rule.all.conditions[1]"]
    );
    // Unknown field.
    let unknown = all(vec![
        country_is("CN"),
        predicate("geo.planet", pb::Operator::Equals, vec![string("Mars")]),
    ]);
    assert_eq!(
        refused(unknown).await,
        vec!["segment.rule.all.conditions[1].predicate.field"]
    );
    // Wrong-typed value: a string for an integer field.
    let wrong = predicate(
        "purchase.count",
        pb::Operator::GreaterThan,
        vec![string("many")],
    );
    let wrong_fields = refused(wrong).await;
    assert_eq!(wrong_fields, vec!["segment.rule.predicate.values[0]"]);
    // Too deep: twelve nested `not`s.
    let mut deep = country_is("CN");
    for _ in 0..12 {
        deep = not(deep);
    }
    let deep_fields = refused(deep).await;
    assert_eq!(deep_fields.len(), 1, "{deep_fields:?}");
    assert!(
        deep_fields[0].starts_with("segment.rule.not.condition.not.condition"),
        "{deep_fields:?}"
    );
    // RULE needs a rule; STATIC must not have one.
    let mut no_rule = create_request("No rule", None);
    if let Some(s) = no_rule.segment.as_mut() {
        s.kind = pb::SegmentKind::Rule.into();
    }
    let status = client.create_segment(no_rule).await.err();
    assert_eq!(
        status.as_ref().map(fields),
        Some(vec!["segment.rule".to_owned()])
    );
    // Nothing was created.
    let listed = client
        .list_segments(pb::ListSegmentsRequest::default())
        .await?
        .into_inner();
    assert!(listed.segments.is_empty());
    Ok(())
}

#[tokio::test]
async fn references_must_exist_and_make_no_cycle_and_block_deletion() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    app.put_customer("c1", "CN", &["vip"]).await?;
    app.put_customer("c2", "CN", &[]).await?;

    let missing = client
        .create_segment(create_request(
            "Missing",
            Some(all(vec![
                country_is("CN"),
                member_of("0190f6f5-0000-7000-8000-000000000000"),
            ])),
        ))
        .await
        .err();
    assert_eq!(
        missing.as_ref().map(fields),
        Some(vec![
            "segment.rule.all.conditions[1].segment.segment_id".to_owned()
        ])
    );

    let base = app.rule_segment("China", country_is("CN")).await?;
    let vip = app
        .rule_segment(
            "China VIP",
            all(vec![member_of(&base.segment_id), tagged("vip")]),
        )
        .await?;
    assert_eq!(app.stored_members(&vip.segment_id).await?, vec!["c1"]);
    assert_eq!(vip.referenced_segment_ids, vec![base.segment_id.clone()]);

    // Self reference and cycle, on update of the base.
    let base_update = |rule: pb::Condition| pb::UpdateSegmentRequest {
        segment: Some(pb::Segment {
            segment_id: base.segment_id.clone(),
            rule: Some(rule),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["rule".to_owned()],
        }),
        validate_only: false,
    };
    let itself = client
        .update_segment(base_update(member_of(&base.segment_id)))
        .await
        .err();
    assert_eq!(
        itself.as_ref().map(fields),
        Some(vec!["segment.rule.segment.segment_id".to_owned()])
    );
    let cycle = client
        .update_segment(base_update(all(vec![
            country_is("CN"),
            member_of(&vip.segment_id),
        ])))
        .await
        .err();
    assert_eq!(
        cycle.as_ref().map(fields),
        Some(vec![
            "segment.rule.all.conditions[1].segment.segment_id".to_owned()
        ])
    );

    // A chain of 5 references is refused at the fifth.
    let mut chain = vec![vip.segment_id.clone()];
    for i in 0..3 {
        let last = chain.last().cloned().unwrap_or_default();
        let next = app
            .rule_segment(&format!("Level {i}"), member_of(&last))
            .await?;
        chain.push(next.segment_id);
    }
    let too_long = client
        .create_segment(create_request(
            "Too long",
            Some(member_of(chain.last().map(String::as_str).unwrap_or(""))),
        ))
        .await
        .err();
    assert_eq!(
        too_long.as_ref().map(fields),
        Some(vec!["segment.rule.segment.segment_id".to_owned()])
    );

    // Deleting a referenced segment: FAILED_PRECONDITION listing the referencing segment.
    let status = client
        .delete_segment(pb::DeleteSegmentRequest {
            segment_id: base.segment_id.clone(),
            etag: String::new(),
        })
        .await
        .err();
    let status = status.ok_or_else(|| anyhow::anyhow!("delete of a referenced segment passed"))?;
    assert_eq!(status.code(), Code::FailedPrecondition);
    let subjects: Vec<String> = status
        .get_details_precondition_failure()
        .map(|p| p.violations.into_iter().map(|v| v.subject).collect())
        .unwrap_or_default();
    assert_eq!(subjects, vec![format!("segments/{}", vip.segment_id)]);

    // ListSegments filters on references and fields.
    let referencing = client
        .list_segments(pb::ListSegmentsRequest {
            referenced_segment_id: base.segment_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        referencing
            .segments
            .iter()
            .map(|s| s.segment_id.clone())
            .collect::<Vec<_>>(),
        vec![vip.segment_id.clone()]
    );
    let on_tags = client
        .list_segments(pb::ListSegmentsRequest {
            field: "tags".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        on_tags
            .segments
            .iter()
            .map(|s| s.segment_id.clone())
            .collect::<Vec<_>>(),
        vec![vip.segment_id.clone()]
    );

    // Incremental: c2 gets the tag, enters the referencing segment in the same evaluation.
    app.put_customer("c2", "CN", &["vip"]).await?;
    app.reevaluate("c2").await?;
    assert_eq!(app.stored_members(&vip.segment_id).await?, vec!["c1", "c2"]);
    // c1 leaves China: leaves both, the referencing one seeing the new base membership.
    app.put_customer("c1", "SG", &["vip"]).await?;
    app.reevaluate("c1").await?;
    assert_eq!(app.stored_members(&base.segment_id).await?, vec!["c2"]);
    assert_eq!(app.stored_members(&vip.segment_id).await?, vec!["c2"]);
    assert_eq!(app.get_segment(&vip.segment_id).await?.member_count, 1);
    Ok(())
}

#[tokio::test]
async fn create_is_idempotent_on_request_id_and_validate_only_creates_nothing() -> anyhow::Result<()>
{
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut dry = create_request("Dry", Some(country_is("CN")));
    dry.validate_only = true;
    let dry = client.create_segment(dry).await?.into_inner();
    assert_eq!(dry.recompute_job_id, "");
    assert!(
        app.get_segment(&dry.segment.unwrap_or_default().segment_id)
            .await
            .is_err()
    );

    let mut keyed = create_request("Keyed", Some(country_is("CN")));
    keyed.request_id = "create-1".to_owned();
    let first = client.create_segment(keyed.clone()).await?.into_inner();
    let replay = client.create_segment(keyed.clone()).await?.into_inner();
    assert_eq!(first.encode_to_vec(), replay.encode_to_vec());
    if let Some(s) = keyed.segment.as_mut() {
        s.display_name = "Other".to_owned();
    }
    let reused = client.create_segment(keyed).await.err();
    let reused = reused.ok_or_else(|| anyhow::anyhow!("reuse was accepted"))?;
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    let listed = client
        .list_segments(pb::ListSegmentsRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.segments.len(), 1);
    Ok(())
}

fn upload(
    segment_id: &str,
    mode: pb::StaticUploadMode,
    request_id: &str,
    batches: &[&[&str]],
) -> Vec<pb::UploadStaticMembersRequest> {
    batches
        .iter()
        .enumerate()
        .map(|(i, ids)| pb::UploadStaticMembersRequest {
            segment_id: if i == 0 {
                segment_id.to_owned()
            } else {
                String::new()
            },
            mode: if i == 0 { mode.into() } else { 0 },
            request_id: if i == 0 {
                request_id.to_owned()
            } else {
                String::new()
            },
            customer_ids: ids.iter().map(|c| (*c).to_owned()).collect(),
        })
        .collect()
}

#[tokio::test]
async fn static_uploads_add_remove_replace_and_skip_unknown_ids() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    for id in ["c1", "c2", "c3", "c4"] {
        app.put_customer(id, "CN", &[]).await?;
    }
    let segment = app.static_segment("Uploaded").await?;
    let id = segment.segment_id.clone();

    let added = client
        .upload_static_members(tokio_stream::iter(upload(
            &id,
            pb::StaticUploadMode::Add,
            "up-1",
            &[&["c1", "c2"], &["c2", "ghost"]],
        )))
        .await?
        .into_inner();
    assert_eq!(
        (
            added.received_count,
            added.added_count,
            added.unknown_count,
            added.member_count
        ),
        (3, 2, 1, 2)
    );
    assert_eq!(added.unknown_customer_ids, vec!["ghost"]);
    // A replay answers the first response and changes nothing.
    let replay = client
        .upload_static_members(tokio_stream::iter(upload(
            &id,
            pb::StaticUploadMode::Add,
            "up-1",
            &[&["c1", "c2"], &["c2", "ghost"]],
        )))
        .await?
        .into_inner();
    assert_eq!(replay, added);
    let reused = client
        .upload_static_members(tokio_stream::iter(upload(
            &id,
            pb::StaticUploadMode::Add,
            "up-1",
            &[&["c3"]],
        )))
        .await
        .err();
    assert_eq!(
        reused.as_ref().map(reason).as_deref(),
        Some("REQUEST_ID_REUSED")
    );

    let removed = client
        .upload_static_members(tokio_stream::iter(upload(
            &id,
            pb::StaticUploadMode::Remove,
            "",
            &[&["c1", "c3"]],
        )))
        .await?
        .into_inner();
    assert_eq!(
        (
            removed.removed_count,
            removed.unchanged_count,
            removed.member_count
        ),
        (1, 1, 1)
    );
    assert_eq!(app.stored_members(&id).await?, vec!["c2"]);

    let replaced = client
        .upload_static_members(tokio_stream::iter(upload(
            &id,
            pb::StaticUploadMode::Replace,
            "",
            &[&["c3", "c4", "nobody"]],
        )))
        .await?
        .into_inner();
    assert_eq!(
        (
            replaced.added_count,
            replaced.removed_count,
            replaced.unknown_count,
            replaced.member_count
        ),
        (2, 1, 1, 2)
    );
    assert_eq!(app.stored_members(&id).await?, vec!["c3", "c4"]);
    assert_eq!(app.get_segment(&id).await?.member_count, 2);
    // Entered: c1, c2, c3, c4; exited: c1 (remove), c2 (replace); all STATIC_UPLOAD.
    let entered = app.events("custops.segmentation.v1.SegmentEntered").await?;
    let exited = app.events("custops.segmentation.v1.SegmentExited").await?;
    assert_eq!((entered.len(), exited.len()), (4, 2));
    for bytes in &exited {
        let event = pb::SegmentExited::decode(bytes.as_slice())?;
        assert_eq!(event.reason, i32::from(pb::ChangeReason::StaticUpload));
    }

    // A malformed id is named by its index across the upload; a rule segment refuses uploads.
    let bad = client
        .upload_static_members(tokio_stream::iter(upload(
            &id,
            pb::StaticUploadMode::Add,
            "",
            &[&["c1"], &["c2", "has space"]],
        )))
        .await
        .err();
    assert_eq!(
        bad.as_ref().map(fields),
        Some(vec!["customer_ids[2]".to_owned()])
    );
    let rule = app.rule_segment("Rule", country_is("CN")).await?;
    let refused = client
        .upload_static_members(tokio_stream::iter(upload(
            &rule.segment_id,
            pb::StaticUploadMode::Add,
            "",
            &[&["c1"]],
        )))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(refused, Some(Code::FailedPrecondition));
    Ok(())
}

#[tokio::test]
async fn preview_counts_samples_and_compares_without_saving() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    for (id, country) in [
        ("c1", "CN"),
        ("c2", "CN"),
        ("c3", "SG"),
        ("c4", "SG"),
        ("c5", "SG"),
    ] {
        app.put_customer(id, country, &[]).await?;
    }
    let china = app.rule_segment("China", country_is("CN")).await?;
    let preview = client
        .preview_segment(pb::PreviewSegmentRequest {
            rule: Some(predicate(
                "geo.country",
                pb::Operator::In,
                vec![string("CN"), string("SG")],
            )),
            sample_size: 3,
            compare_segment_id: china.segment_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!((preview.member_count, preview.customer_count), (5, 5));
    assert_eq!(preview.sample_customer_ids.len(), 3);
    assert!(!preview.time_dependent);
    let comparison = preview.comparison.unwrap_or_default();
    assert_eq!(
        (
            comparison.entering_count,
            comparison.exiting_count,
            comparison.unchanged_count
        ),
        (3, 0, 2)
    );
    let bad = client
        .preview_segment(pb::PreviewSegmentRequest {
            rule: Some(predicate(
                "geo.planet",
                pb::Operator::Equals,
                vec![string("x")],
            )),
            ..Default::default()
        })
        .await
        .err();
    assert_eq!(
        bad.as_ref().map(fields),
        Some(vec!["rule.predicate.field".to_owned()])
    );
    let listed = client
        .list_segments(pb::ListSegmentsRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.segments.len(), 1, "preview saved nothing");
    Ok(())
}

#[tokio::test]
async fn erasure_leaves_every_segment_and_merge_passes_static_memberships() -> anyhow::Result<()> {
    use custops_segmentation::workflow::membership::{self, Cause};
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    for id in ["erased", "source", "target"] {
        app.put_customer(id, "CN", &[]).await?;
    }
    let china = app.rule_segment("China", country_is("CN")).await?;
    let list = app.static_segment("List").await?;
    client
        .upload_static_members(tokio_stream::iter(upload(
            &list.segment_id,
            pb::StaticUploadMode::Add,
            "",
            &[&["erased", "source"]],
        )))
        .await?;
    let cause = |reason| Cause {
        reason,
        event_id: "evt-1".to_owned(),
        now: app.clock_now(),
    };

    let mut tx = app.pool.begin().await?;
    membership::remove_customer(&mut tx, "erased", &cause(pb::ChangeReason::Erasure)).await?;
    tx.commit().await?;
    // Lookups follow the commit through the cache's notification, within a second.
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.segments_of("erased").await.ok() == Some(Vec::new())
        })
        .await
    );

    // The merge moved facts already (and recorded itself): the source has none left.
    sqlx::query("DELETE FROM customer_facts WHERE customer_id = 'source'")
        .execute(&app.pool)
        .await?;
    sqlx::query(
        "INSERT INTO customer_merges (merge_id, source_id, target_id) \
         VALUES ('merge-1', 'source', 'target')",
    )
    .execute(&app.pool)
    .await?;
    let mut tx = app.pool.begin().await?;
    membership::merge_customers(
        &mut tx,
        "merge-1",
        "source",
        "target",
        &cause(pb::ChangeReason::Merge),
    )
    .await?;
    tx.commit().await?;
    let mut expected = vec![china.segment_id.clone(), list.segment_id.clone()];
    expected.sort();
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.segments_of("source").await.ok() == Some(Vec::new())
                && app.segments_of("target").await.ok() == Some(expected.clone())
        })
        .await
    );
    assert_eq!(app.get_segment(&list.segment_id).await?.member_count, 1);
    assert_eq!(app.get_segment(&china.segment_id).await?.member_count, 1);

    let mut reasons = Vec::new();
    for bytes in app.events("custops.segmentation.v1.SegmentExited").await? {
        let event = pb::SegmentExited::decode(bytes.as_slice())?;
        reasons.push((event.customer_id, event.reason));
    }
    reasons.sort();
    let erasure = i32::from(pb::ChangeReason::Erasure);
    let merge = i32::from(pb::ChangeReason::Merge);
    assert_eq!(
        reasons,
        vec![
            ("erased".to_owned(), erasure),
            ("erased".to_owned(), erasure),
            ("source".to_owned(), merge),
            ("source".to_owned(), merge),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_deployment_holds_at_most_10000_segments() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    sqlx::query(
        "INSERT INTO segments (segment_id, display_name, kind, create_time, update_time, etag) \
         SELECT gen_random_uuid(), 'bulk ' || i, 'static', now(), now(), 'e' \
         FROM generate_series(1, 10000) AS i",
    )
    .execute(&app.pool)
    .await?;
    let refused = app
        .client
        .clone()
        .create_segment(create_request("One too many", None))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(refused, Some(Code::ResourceExhausted));
    Ok(())
}

/// A profiles customer id (a UUID) numbered `n`.
fn cid(n: usize) -> String {
    format!("0190f6f5-0000-7000-8000-{n:012}")
}

/// Whether ExplainMembership's stored membership and rule result agree for every customer in
/// every segment given; the disagreements otherwise.
async fn disagreements(
    app: &crate::helpers::TestApp,
    segments: &[&str],
    customers: &[String],
) -> anyhow::Result<Vec<(String, String, bool, bool)>> {
    let mut out = Vec::new();
    for segment in segments {
        for customer in customers {
            let e = app
                .client
                .clone()
                .explain_membership(pb::ExplainMembershipRequest {
                    segment_id: (*segment).to_owned(),
                    customer_id: customer.clone(),
                })
                .await?
                .into_inner();
            if e.member != e.rule_result {
                out.push((
                    (*segment).to_owned(),
                    customer.clone(),
                    e.member,
                    e.rule_result,
                ));
            }
        }
    }
    Ok(out)
}

/// N = "in H and not in static S", N2 = "in N and tagged vip" (a two-level chain). When a
/// recompute of H, an upload to S or a feed event moves members of H or S, N and N2 follow
/// for those customers in the same transaction, and ExplainMembership agrees with the stored
/// memberships afterwards.
#[tokio::test]
async fn referencing_segments_follow_recomputes_uploads_and_feed_events() -> anyhow::Result<()> {
    use custops_common::clock::Clock;
    use custops_common::consumer::EventHandler;
    use custops_contracts::custops::common::v1::Event;
    use custops_contracts::custops::profiles::v1 as pr;
    use custops_segmentation::feeds::profiles::ProfilesFeed;
    use prost::Name;
    use std::sync::Arc;

    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let customers: Vec<String> = (0..12).map(cid).collect();
    for c in &customers {
        app.put_customer(c, "CN", &["vip"]).await?;
    }
    let s = app.static_segment("S").await?;
    client
        .upload_static_members(tokio_stream::iter(upload(
            &s.segment_id,
            pb::StaticUploadMode::Add,
            "",
            &[&[&customers[0], &customers[1]]],
        )))
        .await?;
    let h = app.rule_segment("H", tagged("vip")).await?;
    let n = app
        .rule_segment(
            "N",
            all(vec![
                member_of(&h.segment_id),
                not(member_of(&s.segment_id)),
            ]),
        )
        .await?;
    let n2 = app
        .rule_segment("N2", all(vec![member_of(&n.segment_id), tagged("vip")]))
        .await?;
    let ids = |range: std::ops::Range<usize>| -> Vec<String> { customers[range].to_vec() };
    assert_eq!(app.stored_members(&n.segment_id).await?, ids(2..12));
    assert_eq!(app.stored_members(&n2.segment_id).await?, ids(2..12));
    let all_segments = [
        h.segment_id.as_str(),
        n.segment_id.as_str(),
        n2.segment_id.as_str(),
    ];

    // 1. H's rule changes and its recompute drops 5 members: N and N2 drop them in that run.
    for c in &customers[2..7] {
        app.put_customer(c, "SG", &["vip"]).await?;
        app.reevaluate(c).await?;
    }
    let updated = client
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                segment_id: h.segment_id.clone(),
                rule: Some(all(vec![tagged("vip"), country_is("CN")])),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rule".to_owned()],
            }),
            validate_only: false,
        })
        .await?
        .into_inner();
    let job = app.wait_job(&updated.recompute_job_id).await?;
    assert_eq!(job.state, i32::from(pb::RecomputeJobState::Succeeded));
    let mut stay = ids(0..2);
    stay.extend(ids(7..12));
    assert_eq!(app.stored_members(&h.segment_id).await?, stay);
    assert_eq!(app.stored_members(&n.segment_id).await?, ids(7..12));
    assert_eq!(app.stored_members(&n2.segment_id).await?, ids(7..12));
    assert_eq!(app.get_segment(&n.segment_id).await?.member_count, 5);
    assert_eq!(app.get_segment(&n2.segment_id).await?.member_count, 5);
    let found = disagreements(&app, &all_segments, &customers).await?;
    assert!(found.is_empty(), "explanations disagree: {found:?}");
    // The dependants' exits are events of the job that caused them.
    let mut by_job = Vec::new();
    for bytes in app.events("custops.segmentation.v1.SegmentExited").await? {
        let event = pb::SegmentExited::decode(bytes.as_slice())?;
        if event.recompute_job_id == job.recompute_job_id {
            by_job.push((event.segment_id, event.reason));
        }
    }
    let recompute = i32::from(pb::ChangeReason::Recompute);
    for segment in &all_segments {
        let exits = by_job.iter().filter(|(s, _)| s == segment).count();
        assert_eq!(exits, 5, "exits of {segment} in the job");
    }
    assert!(by_job.iter().all(|(_, reason)| *reason == recompute));
    // Lookups follow too.
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.segments_of(&customers[3]).await.ok() == Some(Vec::new())
        })
        .await
    );

    // 2. Uploads to S: added members leave N and N2, a removed one enters both.
    client
        .upload_static_members(tokio_stream::iter(upload(
            &s.segment_id,
            pb::StaticUploadMode::Add,
            "",
            &[&[&customers[7], &customers[8]]],
        )))
        .await?;
    assert_eq!(app.stored_members(&n.segment_id).await?, ids(9..12));
    assert_eq!(app.stored_members(&n2.segment_id).await?, ids(9..12));
    client
        .upload_static_members(tokio_stream::iter(upload(
            &s.segment_id,
            pb::StaticUploadMode::Remove,
            "",
            &[&[&customers[0]]],
        )))
        .await?;
    let mut expected = vec![customers[0].clone()];
    expected.extend(ids(9..12));
    assert_eq!(app.stored_members(&n.segment_id).await?, expected);
    assert_eq!(app.stored_members(&n2.segment_id).await?, expected);
    assert_eq!(app.get_segment(&n2.segment_id).await?.member_count, 4);
    let found = disagreements(&app, &all_segments, &customers).await?;
    assert!(found.is_empty(), "explanations disagree: {found:?}");

    // 3. A feed event drops customer 9's tag: it leaves H, N and N2 in the event's transaction.
    let feed = ProfilesFeed::new(Arc::new(app.clock.clone()) as Arc<dyn Clock>);
    let updated = pr::CustomerUpdated {
        traits: Some(pr::CustomerTraits {
            customer_id: customers[9].clone(),
            state: pr::CustomerState::Active.into(),
            geography: Some(pr::Geography {
                country_code: "CN".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let event = Event {
        sequence: 1,
        event_id: "ev-untag".into(),
        aggregate_type: "customer".into(),
        aggregate_id: customers[9].clone(),
        event_type: pr::CustomerUpdated::full_name(),
        occur_time: None,
        payload: Some(prost_types::Any {
            type_url: pr::CustomerUpdated::type_url(),
            value: updated.encode_to_vec(),
        }),
        traceparent: String::new(),
    };
    let mut tx = app.pool.begin().await?;
    feed.handle(&mut tx, &event).await?;
    tx.commit().await?;
    let mut expected = vec![customers[0].clone()];
    expected.extend(ids(10..12));
    assert_eq!(app.stored_members(&n.segment_id).await?, expected);
    assert_eq!(app.stored_members(&n2.segment_id).await?, expected);
    let found = disagreements(&app, &all_segments, &customers).await?;
    assert!(found.is_empty(), "explanations disagree: {found:?}");

    // Every count matches the stored memberships.
    for segment in &all_segments {
        let stored = i64::try_from(app.stored_members(segment).await?.len())?;
        assert_eq!(app.get_segment(segment).await?.member_count, stored);
    }
    Ok(())
}

/// A MONEY operand in CNY.
fn money(amount_minor: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::MoneyValue(
            custops_contracts::custops::common::v1::Money {
                amount_minor,
                currency: "CNY".to_owned(),
            },
        )),
    }
}

#[tokio::test]
async fn integer_and_money_operands_past_ten_to_the_fifteenth_name_the_value() -> anyhow::Result<()>
{
    // Issue 14, point 5: each operand is bounded (|x| ≤ 10^15) and refused naming its kind.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let max = 1_000_000_000_000_000_i64;
    let gte = pb::Operator::GreaterOrEqual;
    let cases: Vec<(pb::Condition, Vec<&str>)> = vec![
        (
            predicate("purchase.count", gte, vec![integer(i64::MAX)]),
            vec!["rule.predicate.values[0].integer_value"],
        ),
        (
            predicate(
                "loyalty.points",
                pb::Operator::Between,
                vec![integer(i64::MIN), integer(0)],
            ),
            vec!["rule.predicate.values[0].integer_value"],
        ),
        (
            predicate("purchase.amount", gte, vec![money(i64::MAX)]),
            vec!["rule.predicate.values[0].money_value.amount_minor"],
        ),
        (
            predicate(
                "purchase.amount",
                pb::Operator::LessThan,
                vec![money(i64::MIN)],
            ),
            vec!["rule.predicate.values[0].money_value.amount_minor"],
        ),
        (
            all(vec![
                predicate("rfm.monetary", gte, vec![integer(max + 1)]),
                predicate("purchase.amount", gte, vec![money(-max - 1)]),
            ]),
            vec![
                "rule.all.conditions[0].predicate.values[0].integer_value",
                "rule.all.conditions[1].predicate.values[0].money_value.amount_minor",
            ],
        ),
    ];
    for (rule, expected) in cases {
        let status = client
            .preview_segment(pb::PreviewSegmentRequest {
                rule: Some(rule.clone()),
                ..Default::default()
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("accepted: {rule:?}"))?;
        let mut got = fields(&status);
        got.sort();
        assert_eq!(got, expected, "{rule:?}");
    }
    // The bounds themselves are accepted.
    client
        .preview_segment(pb::PreviewSegmentRequest {
            rule: Some(all(vec![
                predicate("purchase.count", pb::Operator::LessThan, vec![integer(max)]),
                predicate("purchase.amount", gte, vec![money(-max)]),
            ])),
            ..Default::default()
        })
        .await?;
    Ok(())
}
