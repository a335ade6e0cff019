//! List paging through the gRPC API (`custops_common::paging`): a listing of exactly full pages
//! ends on its last full page, a token is bound to its filters (and is still accepted for the
//! same labels however prost orders them), and bad paging fields are named.

use std::collections::BTreeMap;

use custops_contracts::custops::segmentation::v1 as pb;

use crate::helpers::{Client, TestApp, fields, spawn_app};

/// Creates a static segment carrying `labels`.
async fn labelled(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<String> {
    let created = app
        .client
        .clone()
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: name.to_owned(),
                kind: pb::SegmentKind::Static.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(created.segment.unwrap_or_default().segment_id)
}

/// Pages through ListSegments with `request`'s filters, `size` at a time: each page's ids.
async fn pages(
    client: &mut Client,
    request: pb::ListSegmentsRequest,
    size: i32,
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_segments(pb::ListSegmentsRequest {
                page_size: size,
                page_token: token,
                ..request.clone()
            })
            .await?
            .into_inner();
        pages.push(page.segments.into_iter().map(|s| s.segment_id).collect());
        token = page.next_page_token;
        if token.is_empty() {
            return Ok(pages);
        }
        anyhow::ensure!(pages.len() <= 10, "paging does not end");
    }
}

#[tokio::test]
async fn a_listing_of_full_pages_ends_on_its_last_full_page() -> anyhow::Result<()> {
    // Arrange: four segments, listed two at a time.
    let app = spawn_app().await?;
    let mut ids = Vec::new();
    for name in ["A", "B", "C", "D"] {
        ids.push(labelled(&app, name, &[]).await?);
    }

    // Act
    let listed = pages(
        &mut app.client.clone(),
        pb::ListSegmentsRequest::default(),
        2,
    )
    .await?;

    // Assert: two full pages, oldest first, and no empty third page.
    assert_eq!(listed, [ids[..2].to_vec(), ids[2..].to_vec()]);
    Ok(())
}

#[tokio::test]
async fn a_listing_filtered_by_several_labels_pages_through_every_match() -> anyhow::Result<()> {
    // Arrange: three segments carrying three labels, one carrying two of them.
    let app = spawn_app().await?;
    let labels = [("team", "growth"), ("region", "apac"), ("tier", "gold")];
    let mut matching = Vec::new();
    for name in ["A", "B", "C"] {
        matching.push(labelled(&app, name, &labels).await?);
    }
    labelled(&app, "Partial", &labels[..2]).await?;
    let filter = pb::ListSegmentsRequest {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    };

    // Act: every page's request is decoded into a new map, iterated in its own order.
    let listed = pages(&mut app.client.clone(), filter, 1).await?;

    // Assert
    assert_eq!(listed.concat(), matching);
    assert_eq!(listed.len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_token_sent_with_other_filters_or_a_bad_size_is_invalid_argument() -> anyhow::Result<()> {
    // Arrange: a first page of static segments.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    for name in ["A", "B"] {
        labelled(&app, name, &[("team", "growth")]).await?;
    }
    let statics = pb::ListSegmentsRequest {
        kind: pb::SegmentKind::Static.into(),
        page_size: 1,
        ..Default::default()
    };
    let token = client
        .list_segments(statics.clone())
        .await?
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());

    // Act
    let other_kind = client
        .list_segments(pb::ListSegmentsRequest {
            kind: pb::SegmentKind::Rule.into(),
            page_token: token.clone(),
            ..statics.clone()
        })
        .await
        .err();
    let other_labels = client
        .list_segments(pb::ListSegmentsRequest {
            labels: BTreeMap::from([("team".to_owned(), "growth".to_owned())]),
            page_token: token.clone(),
            ..statics.clone()
        })
        .await
        .err();
    let other_size = client
        .list_segments(pb::ListSegmentsRequest {
            page_size: 5,
            page_token: token,
            ..statics.clone()
        })
        .await?
        .into_inner();
    let bad_size_and_kind = client
        .list_segments(pb::ListSegmentsRequest {
            kind: 99,
            page_size: 1001,
            ..Default::default()
        })
        .await
        .err();

    // Assert: other filters refuse the token; another page size pages on; every bad field
    // named at once.
    for refused in [other_kind, other_labels] {
        assert_eq!(
            refused.as_ref().map(fields),
            Some(vec!["page_token".to_owned()])
        );
    }
    assert_eq!(other_size.segments.len(), 1);
    assert_eq!(
        bad_size_and_kind.as_ref().map(fields),
        Some(vec!["page_size".to_owned(), "kind".to_owned()])
    );
    Ok(())
}
