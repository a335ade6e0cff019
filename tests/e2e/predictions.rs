//! Predicted value and churn on the published CDNOW data (issue 19), through the gRPC API only:
//! the 2,357 customers of `tests/data/cdnow/CDNOW_sample.txt` created in profiles with
//! their 6,919 purchases at their real dates, segmentation learning them from the feed, a fit
//! as of 1997-09-30 23:59:59 UTC (the 39-week calibration period of Fader, Hardie & Lee), and
//! the fitted parameters checked against the published ones within 1 %. The holdout sum —
//! expected repeat purchases in the 39 weeks after calibration, from each customer's stored
//! summary and the fitted parameters — is printed beside the actual count.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, TimeZone, Utc};
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::segmentation::v1 as segmentation;
use custops_e2e::{TestSuite, eventually, rid};
use custops_segmentation::domain::predict::{BgNbd, CustomerSummary, expected_purchases};

/// One line of the CDNOW sample: customer, purchase date, dollar value in cents.
struct Line {
    customer: String,
    date: NaiveDate,
    cents: i64,
}

fn cdnow() -> anyhow::Result<Vec<Line>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/cdnow/CDNOW_sample.txt");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            anyhow::ensure!(cols.len() == 5, "bad line {line:?}");
            let dollars: f64 = cols[4].parse()?;
            Ok(Line {
                customer: cols[0].to_owned(),
                date: NaiveDate::parse_from_str(cols[2], "%Y%m%d")?,
                cents: (dollars * 100.0).round() as i64,
            })
        })
        .collect()
}

fn timestamp(t: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn within(name: &str, got: f64, published: f64) {
    let error = (got - published).abs() / published;
    assert!(
        error <= 0.01,
        "{name}: fitted {got}, published {published} ({:.2} % off)",
        error * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bg_nbd_and_gamma_gamma_fitted_through_the_api_reproduce_the_published_cdnow_results()
-> anyhow::Result<()> {
    let lines = cdnow()?;
    assert_eq!(lines.len(), 6_919);
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;
    // Segmentation keeps 3 years of activity by default; CDNOW is from 1997-98.
    clients
        .segmentation
        .update_evaluation_settings(segmentation::UpdateEvaluationSettingsRequest {
            evaluation_settings: Some(segmentation::EvaluationSettings {
                activity_retention_days: 36_500,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["activity_retention_days".to_owned()],
            }),
        })
        .await?;
    clients
        .segmentation
        .update_rfm_config(segmentation::UpdateRfmConfigRequest {
            rfm_config: Some(segmentation::RfmConfig {
                currency: "USD".to_owned(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["currency".to_owned()],
            }),
        })
        .await?;

    // Customers, eight calls at a time, each with its CDNOW id as an order-system identity.
    let ids: Vec<String> = {
        let mut seen: Vec<String> = lines.iter().map(|l| l.customer.clone()).collect();
        seen.dedup();
        seen
    };
    assert_eq!(ids.len(), 2_357);
    let mut customer_ids: BTreeMap<String, String> = BTreeMap::new();
    for batch in ids.chunks(8) {
        let calls: Vec<_> = batch
            .iter()
            .map(|cdnow_id| {
                let mut profiles = clients.profiles.clone();
                let cdnow_id = cdnow_id.clone();
                tokio::spawn(async move {
                    let customer = profiles
                        .create_customer(profiles::CreateCustomerRequest {
                            customer: Some(profiles::Customer {
                                identities: vec![profiles::Identity {
                                    identity_type: profiles::IdentityType::OrderSystemId as i32,
                                    value: format!("cdnow-{cdnow_id}"),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                            request_id: rid(),
                        })
                        .await?
                        .into_inner()
                        .customer
                        .context("no customer")?;
                    anyhow::Ok((cdnow_id, customer.customer_id))
                })
            })
            .collect();
        for call in calls {
            let (cdnow_id, customer_id) = call.await??;
            customer_ids.insert(cdnow_id, customer_id);
        }
    }

    // Every purchase at noon UTC of its day, in one import stream.
    let items: Vec<profiles::ImportActivitiesRequest> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let at = Utc.from_utc_datetime(&line.date.and_hms_opt(12, 0, 0).unwrap_or_default());
            profiles::ImportActivitiesRequest {
                activity: Some(profiles::Activity {
                    customer_id: customer_ids[&line.customer].clone(),
                    source: "cdnow".to_owned(),
                    event_id: format!("line-{i}"),
                    occur_time: Some(timestamp(at)),
                    channel: "web".to_owned(),
                    details: Some(profiles::activity::Details::Purchase(profiles::Purchase {
                        order_id: format!("line-{i}"),
                        amount: Some(common::Money {
                            amount_minor: line.cents,
                            currency: "USD".to_owned(),
                        }),
                        categories: vec!["music".to_owned()],
                        item_count: 1,
                    })),
                    ..Default::default()
                }),
                customer_identity: None,
            }
        })
        .collect();
    let imported = clients
        .profiles
        .import_activities(tokio_stream::iter(items))
        .await?
        .into_inner();
    assert_eq!(
        (imported.accepted_count, imported.rejected_count),
        (6_919, 0),
        "{:?}",
        imported.errors.first()
    );

    // The feed is applied in order: once the last line's customer has all their purchases,
    // every purchase before it is in too.
    let last = lines.last().context("no lines")?;
    let last_id = customer_ids[&last.customer].clone();
    let last_count = lines.iter().filter(|l| l.customer == last.customer).count() as i64;
    let absorbed = eventually(Duration::from_secs(120), || {
        let mut segmentation = clients.segmentation.clone();
        let customer_id = last_id.clone();
        async move {
            let facts = segmentation
                .get_customer_facts(segmentation::GetCustomerFactsRequest { customer_id })
                .await;
            Ok(facts.is_ok_and(|f| {
                f.into_inner()
                    .facts
                    .and_then(|f| f.purchases)
                    .is_some_and(|p| p.purchase_count == last_count)
            }))
        }
    })
    .await;
    anyhow::ensure!(absorbed, "segmentation never absorbed the CDNOW purchases");

    // The fit, as of the end of the 39-week calibration period.
    let calibration_end = Utc
        .with_ymd_and_hms(1997, 9, 30, 23, 59, 59)
        .single()
        .context("date")?;
    let job = clients
        .segmentation
        .fit_prediction_model(segmentation::FitPredictionModelRequest {
            as_of_time: Some(timestamp(calibration_end)),
            request_id: rid(),
        })
        .await?
        .into_inner()
        .job
        .context("no job")?;
    let finished = eventually(Duration::from_secs(120), || {
        let mut segmentation = clients.segmentation.clone();
        let recompute_job_id = job.recompute_job_id.clone();
        async move {
            let job = segmentation
                .get_recompute_job(segmentation::GetRecomputeJobRequest { recompute_job_id })
                .await?
                .into_inner()
                .job
                .context("no job")?;
            anyhow::ensure!(
                job.state != segmentation::RecomputeJobState::Failed as i32,
                "the fit failed: {}",
                job.error_message
            );
            Ok(job.state == segmentation::RecomputeJobState::Succeeded as i32)
        }
    })
    .await;
    anyhow::ensure!(finished, "the fit did not finish");
    let model = clients
        .segmentation
        .get_prediction_model(segmentation::GetPredictionModelRequest { version: 0 })
        .await?
        .into_inner()
        .model
        .context("no model")?;
    assert_eq!(
        (model.customer_count, model.repeat_customer_count),
        (2_357, 946)
    );
    let bg = model.bg_nbd.context("no BG/NBD")?;
    let gg = model.gamma_gamma.context("no Gamma-Gamma")?;
    eprintln!(
        "CDNOW fit: r {:.4} alpha {:.4} a {:.4} b {:.4} (LL {:.1}); p {:.4} q {:.4} gamma {:.4} \
         dollars; {} ms",
        bg.r,
        bg.alpha,
        bg.a,
        bg.b,
        bg.log_likelihood,
        gg.p,
        gg.q,
        gg.gamma / 100.0,
        model
            .fit_duration
            .map_or(0, |d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
    );
    within("r", bg.r, 0.243);
    within("alpha", bg.alpha, 4.414);
    within("a", bg.a, 0.793);
    within("b", bg.b, 2.426);
    within("p", gg.p, 6.25);
    within("q", gg.q, 3.74);
    // γ is in minor units of the model's currency: cents.
    within("gamma", gg.gamma / 100.0, 15.44);

    // The spread over everyone: deciles ascending, counts as stored.
    let spread = clients
        .segmentation
        .get_prediction_distribution(segmentation::GetPredictionDistributionRequest {
            segment_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (spread.model_version, spread.customer_count),
        (model.version, 2_357)
    );
    let clv: Vec<i64> = spread.clv_deciles.iter().map(|m| m.amount_minor).collect();
    assert_eq!(clv.len(), 9);
    assert!(clv.windows(2).all(|w| w[0] <= w[1]), "{clv:?}");
    let alive = &spread.probability_alive_deciles;
    assert_eq!(alive.len(), 9);
    assert!(
        alive.windows(2).all(|w| w[0] <= w[1]) && alive.iter().all(|p| (0.0..=1.0).contains(p))
    );
    assert!(spread.churn_risk_count > 0 && spread.churn_risk_count < 2_357);
    eprintln!(
        "CDNOW spread: CLV deciles {clv:?} cents, P(alive) deciles {alive:.2?}, {} at churn risk",
        spread.churn_risk_count
    );
    let unknown = clients
        .segmentation
        .get_prediction_distribution(segmentation::GetPredictionDistributionRequest {
            segment_id: uuid::Uuid::now_v7().to_string(),
        })
        .await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(tonic::Code::NotFound));

    // Customer 360 shows the prediction in its segmentation section.
    let first_id = customer_ids
        .values()
        .next()
        .context("no customers")?
        .clone();
    let view = clients
        .profiles
        .get_customer360(profiles::GetCustomer360Request {
            customer_id: first_id,
            sections: vec![profiles::Customer360Section::Segments as i32],
            section_timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        })
        .await?
        .into_inner();
    let shown = view
        .segments
        .and_then(|s| s.prediction)
        .context("Customer 360 has no prediction")?;
    assert_eq!(shown.model_version, model.version);

    // Holdout: the 39 weeks after calibration, expected from each stored summary beside the
    // repeat transactions (purchase days) that actually came.
    let params = BgNbd {
        r: bg.r,
        alpha: bg.alpha,
        a: bg.a,
        b: bg.b,
    };
    let mut expected = 0.0;
    for customer_id in customer_ids.values() {
        let prediction = clients
            .segmentation
            .get_customer_prediction(segmentation::GetCustomerPredictionRequest {
                customer_id: customer_id.clone(),
            })
            .await?
            .into_inner()
            .prediction
            .context("no prediction")?;
        assert!((0.0..=1.0).contains(&prediction.probability_alive));
        let summary = CustomerSummary {
            x: prediction.repeat_transactions as f64,
            t_x: prediction.recency_weeks,
            t: prediction.age_weeks,
            m: 0.0,
        };
        expected += expected_purchases(&params, &summary, 39.0)?;
    }
    let holdout_start = NaiveDate::from_ymd_opt(1997, 10, 1).context("date")?;
    let mut days: Vec<(&str, NaiveDate)> = lines
        .iter()
        .filter(|l| l.date >= holdout_start)
        .map(|l| (l.customer.as_str(), l.date))
        .collect();
    days.sort_unstable();
    days.dedup();
    let actual = days.len() as f64;
    eprintln!(
        "CDNOW holdout (39 weeks): expected {expected:.1} repeat transactions, actual {actual}"
    );
    // The model under-forecasts this holdout by about 12 % (1,653 against 1,882): customers with
    // one or two calibration repeats came back more than BG/NBD expects (the fitted parameters
    // are the published ones, and domain::predict's tests pin the formula on hand-computed
    // customers). A gap past 15 % would mean the stored summaries or the refresh broke.
    assert!(
        (expected - actual).abs() / actual < 0.15,
        "expected {expected:.1} vs actual {actual}"
    );
    suite.stop().await
}
